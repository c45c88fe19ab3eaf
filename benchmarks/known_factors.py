"""Do the directions mean anything? Every method's directions, scored against the world's true factors.

    python benchmarks/known_factors.py                                   # the committed run
    python benchmarks/known_factors.py --samples 2 --fractions 0.6 --k 2 --out /tmp/kf.json   # a quick look

On the shapes model (labkit.worlds, load_model("shapes")), for each sample and each timestep t
(fractions of T), each method proposes k unit directions, and the scorer (labkit.scoring.
score_directions) edits along each at ± strengths, finishes sampling, reads the factors with the
read-out and reports the response R (k × 6 factors, in units of each factor's standard
deviation), each direction's disentanglement (the share of its response on its top factor), the
basis's coverage (distinct top factors) and the side effect (the change in re-render error: does
the edit leave the world?). The methods, on the same samples and timesteps:

    park-local    Park et al.: top-k right singular vectors v_i of J = ∂h/∂x_t at the sample
    park-global   Park et al.: the Grassmann (chordal) mean of the samples' local bases at t
    loco          LOCO-Edit's Jacobian (Chen et al. 2024), without its mask: top-k right singular
                  vectors of the posterior mean's Jacobian ∂x̂₀/∂x_t
    random        random orthonormal directions in X: the floor
    h-park-u      an edit in H (labkit.hspace) along Park's left singular vectors u_i
    h-pca         an edit in H along the top-k principal components of h at t (Haas et al.)
    h-random      an edit in H along random orthonormal directions: the floor for H

The X methods are applied both ways, x-space guidance and the naive x_t + γ v; H methods add
γ d to the mid-block output in every step from t down to 0.2 T (so they do not apply at
t ≤ 0.2 T: that row is marked, not scored).

**The edit budget is the same for every method: the change it makes to the finished image.**
For each direction, labkit.scoring.strength_for_change measures a probe edit (root-mean-square
pixel change of the finished image) and scales the strength linearly so that +γ changes the
image by the largest budget; the smaller budgets scale down from it. Edits are not linear, so
the change actually made (both signs, every strength) is measured and reported beside the
budget. Disentanglement and coverage are scale-free; the side effect is per edit.

Prints the tables (per method and edit, per t: mean disentanglement, mean coverage, mean side
effect, and the change made) and the ratios against the random floor, and writes everything, down
to each direction's response, to ``--out``. The chapter book/part2-diffusion/08_known_factors.ipynb
loads the committed run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from labkit.cache import weights_fingerprint
from labkit.diffusion import QUALITY_BOOST, Sample, posterior_mean, sample_at, timestep_at
from labkit.editing import global_directions, sample_basis
from labkit.hspace import h_principal_components, h_shape
from labkit.models import DiffusionModel, load_model
from labkit.readout import load_readout
from labkit.scoring import (
    PROBE_STRENGTHS,
    ReadOut,
    image_change,
    score_directions,
    strength_for_change,
    world_readout,
)
from labkit.spectral import local_basis

REPO = Path(__file__).resolve().parents[1]
METHODS = ("park-local", "park-global", "loco", "random", "h-park-u", "h-pca", "h-random")
H_METHODS = ("h-park-u", "h-pca", "h-random")
def orthonormal(k: int, shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> torch.Tensor:
    """k random orthonormal directions of the given shape (QR of a seeded Gaussian matrix)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(int(torch.tensor(shape).prod()), k, generator=g, dtype=torch.float64))
    return q.T.to(dtype).reshape(k, *shape)


def score_method(model: DiffusionModel, sample: Sample, directions: torch.Tensor, how: str, budgets: list[float],
                 readout: ReadOut) -> dict:
    """Scale each direction's strength to the budget, score it, and return the row's numbers (lists, for JSON)."""
    rows = {"strengths": [], "change": [], "response": [], "disentanglement": [], "side_effect": [], "top_factor": []}
    for d in directions:
        largest = strength_for_change(model, sample, d, max(budgets), method=how)
        strengths = [largest * b / max(budgets) for b in budgets]
        s = score_directions(model, sample, d[None], strengths, readout, method=how)
        rows["strengths"].append(strengths)
        rows["change"].append(image_change(s.images[0, 1:], s.images[0, :1]).tolist())
        rows["response"].append(s.response[0].tolist())
        rows["disentanglement"].append(s.disentanglement[0].item())
        rows["side_effect"].append(s.side_effect[0].item())
        rows["top_factor"].append(s.top_factor[0])
    rows["coverage"] = len(set(rows["top_factor"]))
    return rows


def directions_at(model: DiffusionModel, samples: list[Sample], t: int, k: int, pca_samples: int,
                  seed: int, num_steps: int) -> dict[str, list[torch.Tensor]]:
    """Each method's k directions at each sample (lists indexed like ``samples``)."""
    bases = [sample_basis(model, s, k) for s in samples]
    mean = global_directions(bases, k)
    pca, _ = h_principal_components(model, t, k, n=pca_samples, seed=10**6 + seed, num_steps=num_steps)
    shape_h = h_shape(model)
    out: dict[str, list[torch.Tensor]] = {m: [] for m in METHODS}
    for i, (s, b) in enumerate(zip(samples, bases, strict=True)):
        out["park-local"].append(b.v.squeeze(1))
        out["park-global"].append(mean.squeeze(1))
        out["loco"].append(local_basis(posterior_mean(model, t), s.x_t, k).v.squeeze(1))
        out["random"].append(orthonormal(k, model.sample_shape, seed + 1000 * i + t, model.dtype))
        out["h-park-u"].append(b.u.squeeze(1))
        out["h-pca"].append(pca)
        out["h-random"].append(orthonormal(k, shape_h, seed + 1000 * i + t + 7, model.dtype))
    return out


def summarise(rows: list[dict]) -> dict:
    """Per method/edit and fraction: means over samples (and directions) of the scores."""
    summary: dict = {}
    for r in rows:
        if r.get("skipped"):
            continue
        key, cell = f"{r['method']}/{r['edit']}", summary.setdefault(f"{r['method']}/{r['edit']}", {})
        acc = cell.setdefault(str(r["fraction"]), {"disentanglement": [], "coverage": [], "side_effect": [],
                                                   "change": [], "response_total": []})
        acc["disentanglement"] += r["disentanglement"]
        acc["coverage"].append(r["coverage"])
        acc["side_effect"] += r["side_effect"]
        acc["change"] += [c for per_direction in r["change"] for c in per_direction]
        acc["response_total"] += [sum(resp) for resp in r["response"]]
        summary[key] = cell
    for cell in summary.values():
        for fraction, acc in cell.items():
            cell[fraction] = {name: round(sum(v) / len(v), 4) for name, v in acc.items()}
    return summary


def print_tables(summary: dict, fractions: list[float], budgets: list[float]) -> None:
    columns = [str(f) for f in fractions]
    for measure, what in (("disentanglement", "mean disentanglement (share of the response on the top factor; "
                                               "1 = one factor, 1/6 = all equally)"),
                          ("coverage", "mean coverage (distinct top factors per basis of k)"),
                          ("side_effect", "mean side effect (change in re-render error; > 0: leaves the world)"),
                          ("change", f"mean change made to the image, RMS (budgets {budgets})")):
        print(f"\n{what}\n{'method/edit':<22}" + "".join(f"{'t=' + c + 'T':>10}" for c in columns))
        for key, cell in summary.items():
            values = [cell.get(c, {}).get(measure) for c in columns]
            print(f"{key:<22}" + "".join(f"{'n/a':>10}" if v is None else f"{v:>10.3f}" for v in values))
    print("\nratios against the floor (same edit; disentanglement, park-local ÷ random):")
    for how in ("guidance", "naive"):
        local, floor = summary.get(f"park-local/{how}", {}), summary.get(f"random/{how}", {})
        ratios = [local[c]["disentanglement"] / floor[c]["disentanglement"] if c in local and c in floor else None
                  for c in columns]
        print(f"  {how:<9}" + "".join(f"{'n/a':>10}" if r is None else f"{r:>9.2f}×" for r in ratios))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes", help="the shapes model (default) or a folder with another one")
    parser.add_argument("--samples", type=int, default=3, help="samples (noise seeds 0..N-1)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0],
                        help="edit timesteps as fractions of T")
    parser.add_argument("--k", type=int, default=4, help="directions per method")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.1],
                        help="image changes (RMS pixel, images in [-1, 1]) each edit is scaled to, both signs")
    parser.add_argument("--pca-samples", type=int, default=64, help="samples for h-space PCA at each t")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (20, as the book's Part II chapters)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "known_factors_cpu.json"))
    args = parser.parse_args(argv)
    if args.samples < 2:
        parser.error(f"--samples must be at least 2 (park-global averages over samples), got {args.samples}")
    if args.k < 1 or args.pca_samples <= args.k or args.steps < 1:
        parser.error("--k must be ≥ 1, --pca-samples > --k, --steps ≥ 1")
    if any(not 0 < f <= 1 for f in args.fractions):
        parser.error(f"--fractions must lie in (0, 1], got {args.fractions}")
    if any(not 0 < b < 1 for b in args.budgets):
        parser.error(f"--budgets must lie in (0, 1) (RMS pixel change of images in [-1, 1]), got {args.budgets}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    readout_model = load_readout()
    model, readout = load_model(args.model), world_readout(readout_model)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    # Finished (t, sample) units are kept in OUT.partial as they complete; a rerun with the same
    # configuration and the same weights goes on from there (a run takes tens of minutes on a CPU).
    # The weights are part of the key: after a retrain, rows of the old model must not be reused.
    weights = {"model": weights_fingerprint(model.unet), "readout": weights_fingerprint(readout_model)}
    partial = out.with_name(out.name + ".partial")
    saved = json.loads(partial.read_text()) if partial.exists() else {}
    rows = saved["rows"] if saved.get("config") == config and saved.get("weights") == weights else []
    done = {(r["fraction"], r["sample"]) for r in rows}
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    for fraction in args.fractions:
        seeds = range(args.seed, args.seed + args.samples)
        if all((fraction, seed) in done for seed in seeds):
            continue
        t = timestep_at(model, fraction, args.steps)
        samples = [sample_at(model, seed, t, args.steps) for seed in seeds]
        found = directions_at(model, samples, t, args.k, args.pca_samples, args.seed, args.steps)
        for i, sample in enumerate(samples):
            if (fraction, sample.seed) in done:
                continue
            for method in METHODS:
                for how in (("h",) if method in H_METHODS else ("guidance", "naive")):
                    row = {"method": method, "edit": how, "fraction": fraction, "t": t, "sample": sample.seed}
                    if how == "h" and t <= QUALITY_BOOST * model.num_train_timesteps:
                        rows.append({**row, "skipped": "no step above 0.2 T is left to edit h in"})
                        continue
                    rows.append({**row, **score_method(model, sample, found[method][i], how, args.budgets,
                                                       readout)})
            partial.write_text(json.dumps({"config": config, "weights": weights, "rows": rows}))
            print(f"t = {fraction} T ({t}), sample {sample.seed}: done after {time.perf_counter() - start:.0f} s",
                  flush=True)
    seconds = time.perf_counter() - start
    summary = summarise(rows)
    report = {
        "model": args.model,
        "weights_sha256": weights,
        "factors": list(readout.names),
        "config": config,
        "probe_strengths": PROBE_STRENGTHS,
        "timing": {"seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
                   "cpu_cores": os.cpu_count(),
                   "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "summary": summary,
        "rows": rows,
    }
    out.write_text(json.dumps(report, indent=1) + "\n")
    partial.unlink(missing_ok=True)
    print_tables(summary, args.fractions, args.budgets)
    print(f"\n{seconds:.0f} s; wrote {out}")
    return report


if __name__ == "__main__":
    main()
