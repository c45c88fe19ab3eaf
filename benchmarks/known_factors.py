"""Do the directions mean anything? Every method's directions, scored against the world's true factors.

    python benchmarks/known_factors.py                                   # the confirmatory run (hours on a CPU)
    python benchmarks/known_factors.py --samples 4 --fractions 0.6 --out /tmp/kf.json   # a quick look

On the shapes model (labkit.worlds, load_model("shapes")), for each of N samples and each
timestep t (fractions of T), each method proposes directions, and labkit.scoring matches every
edit along them to the same change of the finished image (each budget b, both signs, within ±10%;
an edit that cannot be matched is counted and left out), reads the seven factors with the
read-out and scores the response R (directions × factors, in mean differences; the shape as a
flip). Per (sample, t, method, edit) it records disentanglement, the top-two gap, coverage, DCI
D and C, the side effect, the on-manifold share of the image change, the read-out's
self-consistency on the edited images and how far the latent moved; per (sample, t) the step ε*
where the linearisation of h along v₁ breaks (10%). The methods, on the same samples:

    park-local    Park et al.: top-k right singular vectors of J = ∂h/∂x_t at the sample
    park-global   Park et al.: the Grassmann (chordal) mean of all N samples' local bases at t
    loco          the posterior mean's Jacobian ∂x̂₀/∂x_t, top-k right singular vectors (no mask)
    loco-mask     LOCO-Edit's construction with this benchmark's choices (object mask grown one pixel, r = 5):
                  masked to the object, null space of the rest projected out
    random        random orthonormal directions in X: the floor
    oracle        per factor, the difference of two DDIM-inverted renders differing in it: the ceiling
    h-park-u      an edit in H along Park's left singular vectors u_i
    h-pca         an edit in H along the top-k principal components of h at t (Haas et al.)
    h-random      an edit in H along random orthonormal directions: the floor for H

X methods are edited both ways, x-space guidance and naive; H methods add γd to the mid-block
output from t down to 0.2 T (so not at t ≤ 0.2 T). The first --dose-samples samples are scored
at every --dose-budgets too (dose–response); the confirmatory numbers use --budgets only.

Every (t, sample) unit is a file in OUT.units/, keyed by the configuration and the weights, so a
killed run goes on where it stopped (units finish in any order) and a changed run never reuses
a stale unit. When all units exist, the merge writes OUT: per-sample values, 95% bootstrap
intervals over samples, the floor-to-ceiling fractions, and every pair of methods compared on
the same samples (paired bootstrap at the Bonferroni level, Wilcoxon p with Holm's correction,
one family per measure and t); the per-sample records stay in OUT.units/ (OUT names the folder and
the key). The chapter book/part2-diffusion/08_known_factors.ipynb loads both.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import inspect
import json
import math
import os
import textwrap
import time
from pathlib import Path

import torch

from labkit import (
    budget,
    disentanglement,
    linearity,
    oracle,
    scoring,
    stats,
    worlds,
)
from labkit.budget import match_budget
from labkit.cache import weights_fingerprint
from labkit.diffusion import QUALITY_BOOST, h_space, posterior_mean, sample_at, timestep_at
from labkit.editing import finish, global_directions, sample_basis
from labkit.files import write_json
from labkit.hspace import h_principal_components, h_shape
from labkit.linearity import breaking_step
from labkit.models import DiffusionModel, load_model, set_fp32_precision
from labkit.oracle import loco_directions, oracle_directions
from labkit.readout import load_readout, read_factors
from labkit.scoring import basis_summary, score_edits, select, world_instrument
from labkit.spectral import local_basis
from labkit.stats import bootstrap_ci, compare_all, floor_to_ceiling

REPO = Path(__file__).resolve().parents[1]
# The scorer's own code keys the units with the configuration and the weights: a changed scorer never
# meets old units. It is the modules below and this script's unit functions (UNIT_CODE, after their
# definitions); the merge and the tables are not part of it, so changing a report keeps the units.
# (The samplers and solvers it calls are the library's, tested on their own.)
CODE = tuple(Path(m.__file__) for m in (budget, disentanglement, linearity, oracle, scoring, stats))
X_METHODS = ("park-local", "park-global", "loco", "loco-mask", "random", "oracle")
H_METHODS = ("h-park-u", "h-pca", "h-random")
MEASURES = ("disentanglement", "top_two_gap", "coverage", "dci_d", "dci_c", "side_effect", "on_manifold",
            "consistency", "change", "moved")
ALPHA = 0.05  # the family-wise error rate of every family of comparisons (one per measure and t)


def orthonormal(k: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """k random orthonormal directions of the given shape (QR of a seeded Gaussian matrix)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(math.prod(shape), k, generator=g, dtype=torch.float64))
    return q.T.float().reshape(k, *shape)


def shared_directions(model: DiffusionModel, fraction: float, args) -> dict:
    """What every unit at t shares: the samples, their bases, the global directions and h's PCA."""
    t = timestep_at(model, fraction, args.steps)
    samples = [sample_at(model, seed, t, args.steps) for seed in range(args.seed, args.seed + args.samples)]
    bases = [sample_basis(model, s, args.k) for s in samples]
    pca, _ = h_principal_components(model, t, args.k, n=args.pca_samples, seed=10**6 + args.seed,
                                    num_steps=args.steps)
    return {"fraction": fraction, "t": t, "samples": samples, "bases": bases, "pca": pca,
            "global": global_directions(bases, args.k).squeeze(1)}


def unit_directions(model: DiffusionModel, shared: dict, i: int, args, readout) -> dict[str, torch.Tensor]:
    """Each method's directions at sample i (rows: directions)."""
    sample, basis, t = shared["samples"][i], shared["bases"][i], shared["t"]
    seed = sample.seed
    read = read_factors(finish(model, sample, sample.x_t).clamp(-1, 1), readout)
    # LOCO-Edit's region: the read object, thresholded and grown by one pixel
    mask = (torch.nn.functional.max_pool2d(worlds.object_mask(read), 3, 1, 1) > 0.5).to(model.dtype)
    out = {
        "park-local": basis.v.squeeze(1),
        "park-global": shared["global"],
        "loco": local_basis(posterior_mean(model, t), sample.x_t, args.k).v.squeeze(1),
        "loco-mask": loco_directions(model, sample, mask, args.k),
        "random": orthonormal(args.k, model.sample_shape, 7919 * seed + t),
        "oracle": oracle_directions(model, sample, readout),
    }
    if t > QUALITY_BOOST * model.num_train_timesteps:
        out.update({"h-park-u": basis.u.squeeze(1), "h-pca": shared["pca"],
                    "h-random": orthonormal(args.k, h_shape(model), 7919 * seed + t + 1)})
    return out


def score_unit(model: DiffusionModel, shared: dict, i: int, args, readout, instrument) -> dict:
    """One (t, sample) unit: every method and edit, all its directions matched and scored as one batch."""
    start = time.perf_counter()
    sample = shared["samples"][i]
    directions = unit_directions(model, shared, i, args, readout)
    budgets = sorted(set(args.budgets) | (set(args.dose_budgets) if i < args.dose_samples else set()))
    record: dict = {"fraction": shared["fraction"], "t": shared["t"], "sample": sample.seed, "methods": {}}
    for how, methods in (("guidance", X_METHODS), ("naive", X_METHODS), ("h", H_METHODS)):
        methods = [m for m in methods if m in directions and m in args.methods]
        if not methods:
            continue
        stacked = torch.cat([directions[m] for m in methods])
        # the edits and their finishing run under bfloat16 autocast with --precision bf16 (2-3x faster
        # on a CPU with AVX512-BF16); directions, read-out and scores stay in float32
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            edits = match_budget(model, sample, stacked, budgets, how, max_rounds=args.max_rounds)
        scores = score_edits(instrument, edits)
        first = 0
        for m in methods:
            rows = range(first, first + len(directions[m]))
            first += len(directions[m])
            record["methods"][f"{m}/{how}"] = _method_record(scores, rows, args.budgets, budgets)
    record["epsilon_star"] = breaking_step(h_space(model, shared["t"]), sample.x_t, shared["bases"][i].v[0])
    record["x_t_norm"] = float(sample.x_t.norm())
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["load_average"] = round(os.getloadavg()[0], 2)
    return record


def _method_record(scores, rows: range, main_budgets: list[float], budgets: list[float]) -> dict:
    """One method's numbers at one unit: the confirmatory summary, per-budget summaries, its response."""
    main = select(scores, rows, main_budgets)
    out = {"summary": basis_summary(main), "response": main.response.tolist()}
    if len(budgets) > len(main_budgets):
        out["dose"] = {str(b): basis_summary(select(scores, rows, [b])) for b in budgets}
    return out


def _ceiling_above_floor(rows: list[dict], ceiling: str, floor: str) -> str | None:
    """None where the ceiling is detectably above the floor in the paired comparisons ``rows``
    (compare_all's, corrected as every other pair), else why the floor-to-ceiling scale is undefined."""
    for r in rows:
        if {r["a"], r["b"]} == {ceiling, floor}:
            higher = r["mean_difference"] > 0 if r["a"] == ceiling else r["mean_difference"] < 0
            if r["detected"] and higher:
                return None
            return (f"no scale: {ceiling} is not detectably above {floor} (paired, corrected: "
                    f"{'+' if higher else '-'}{abs(r['mean_difference']):.3f}, p_holm {r['p_holm']:.2g})")
    return f"no scale: {ceiling} and {floor} were not compared (too few samples with a value)"


UNIT_CODE = (orthonormal, shared_directions, unit_directions, score_unit, _method_record)


def code_key() -> str:
    """sha256 of the scorer's code: the CODE modules, the unit functions, the method lists.

    Each as its syntax tree without docstrings (ast.dump drops comments and layout too): a changed
    docstring, comment or line break keeps the units; a changed expression does not.
    """
    sources = [path.read_text() for path in CODE] + [textwrap.dedent(inspect.getsource(f)) for f in UNIT_CODE]
    parts = [_without_docstrings(ast.parse(source)) for source in sources] + [repr((X_METHODS, H_METHODS))]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def _without_docstrings(tree: ast.Module) -> str:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def merge(units: list[dict], args) -> dict:
    """Per method/edit and t: per-sample values, bootstrap intervals, floor-to-ceiling, paired comparisons."""
    cells: dict = {}
    for u in units:
        for key, rec in u["methods"].items():
            cell = cells.setdefault(key, {}).setdefault(str(u["fraction"]), {m: {} for m in MEASURES})
            for m in MEASURES:
                cell[m][u["sample"]] = rec["summary"][m]
    summary, comparisons, progress, resamples = {}, {}, {}, {}
    for key, per_t in cells.items():
        for fraction, per_measure in per_t.items():
            out = summary.setdefault(key, {}).setdefault(fraction, {})
            for m, per_sample in per_measure.items():
                out[m] = _mean_ci([per_sample[s] for s in sorted(per_sample)])
    fractions = sorted({str(u["fraction"]) for u in units}, key=float)
    for fraction in fractions:
        seeds = sorted({u["sample"] for u in units if str(u["fraction"]) == fraction})
        for m in ("disentanglement", "top_two_gap", "dci_d", "dci_c", "side_effect", "on_manifold"):
            per = {key: [cells[key][fraction][m].get(s, math.nan) for s in seeds]
                   for key in cells if fraction in cells[key]}
            per = {k: v for k, v in per.items() if sum(math.isfinite(x) for x in v) >= 5}
            n = resamples.setdefault(fraction, {})[m] = comparison_resamples(len(per), args.resamples)
            comparisons.setdefault(fraction, {})[m] = compare_all(per, alpha=ALPHA, n_resamples=n) if len(per) > 1 \
                else []
        for how in ("guidance", "naive"):
            floor, ceiling = f"random/{how}", f"oracle/{how}"
            if floor not in cells or ceiling not in cells:
                continue
            for m in ("disentanglement", "dci_d", "top_two_gap"):
                base = [cells[floor][fraction][m].get(s, math.nan) for s in seeds]
                top = [cells[ceiling][fraction][m].get(s, math.nan) for s in seeds]
                scale = _ceiling_above_floor(comparisons[fraction][m], ceiling, floor)
                for key in cells:
                    if not key.endswith(f"/{how}") or fraction not in cells[key]:
                        continue
                    values = [cells[key][fraction][m].get(s, math.nan) for s in seeds]
                    # a fraction of a span that may be zero or negative has no scale: its sign and size
                    # would be the noise's (an oracle below the floor flips every method's sign)
                    est = floor_to_ceiling(values, base, top) if scale is None else {"error": scale}
                    progress.setdefault(key, {}).setdefault(fraction, {})[m] = est
    dose: dict = {}
    for u in units:
        for key, rec in u["methods"].items():
            for b, s in rec.get("dose", {}).items():
                cell = dose.setdefault(key, {}).setdefault(str(u["fraction"]), {}).setdefault(b, {})
                for m in ("disentanglement", "side_effect", "on_manifold", "change", "dci_d"):
                    cell.setdefault(m, []).append(s[m])
    for key in dose:
        for fraction in dose[key]:
            for b, per_measure in dose[key][fraction].items():
                dose[key][fraction][b] = {m: _mean_ci(v) for m, v in per_measure.items()}
    unmatched = {key: sum(u["methods"][key]["summary"]["unmatched"] for u in units if key in u["methods"])
                 for key in cells}
    matched = {key: sum(u["methods"][key]["summary"]["matched"] for u in units if key in u["methods"])
               for key in cells}
    return {"summary": summary, "floor_to_ceiling": progress, "comparisons": comparisons,
            "comparison_resamples": resamples, "dose_response": dose,
            "edits": {"matched": matched, "unmatched": unmatched},
            "linearity": {str(u["fraction"]) + "/" + str(u["sample"]): {
                "epsilon_star": u["epsilon_star"], "x_t_norm": u["x_t_norm"],
                "moved": {k: r["summary"]["moved"] for k, r in u["methods"].items() if not k.endswith("/h")}}
                for u in units}}


def comparison_resamples(methods: int, given: int | None = None) -> int:
    """Bootstrap resamples for one family of paired comparisons among ``methods`` methods.

    ``given`` (--resamples) where set; else compare_all's rule for its corrected intervals: with
    m = methods (methods − 1)/2 pairs, each end of an interval is the alpha/(2m) quantile of the
    resamples, so about 10 resamples lie beyond it when n ≥ 20 m / alpha (42,000 for the 105 pairs
    of 15 methods), and never fewer than 2,000.
    """
    if given is not None:
        return given
    pairs = methods * (methods - 1) // 2
    return min(stats.MAX_RESAMPLES, max(2000, math.ceil(20 * pairs / ALPHA)))


def _mean_ci(values: list) -> dict:
    """Mean and 95% bootstrap interval over the finite values (all three equal for a constant or single value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) >= 2 and len(set(finite)) > 1:
        mean, low, high = bootstrap_ci(finite)
    else:
        mean = low = high = finite[0] if finite else math.nan
    return {"mean": mean, "low": low, "high": high, "n": len(finite)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes", help="the shapes model (default) or a folder with another one")
    parser.add_argument("--samples", type=int, default=48, help="samples per timestep (noise seeds SEED..SEED+N−1)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0],
                        help="edit timesteps as fractions of T (each is rounded to the DDIM schedule)")
    parser.add_argument("--k", type=int, default=4, help="directions per method (the oracle has one per factor)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.1],
                        help="image changes (RMS pixel, images in [-1, 1]) every edit is matched to, both signs")
    parser.add_argument("--dose-budgets", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2],
                        help="the budgets of the dose–response curves")
    parser.add_argument("--dose-samples", type=int, default=8, help="how many samples get the dose–response")
    parser.add_argument("--methods", nargs="+", default=list(X_METHODS + H_METHODS),
                        choices=list(X_METHODS + H_METHODS), help="the methods to score (default: all)")
    parser.add_argument("--max-rounds", type=int, default=5, help="edits tried per budget before it counts unmatched")
    parser.add_argument("--pca-samples", type=int, default=64, help="samples for h-space PCA at each t")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (20, as the book's Part II chapters)")
    parser.add_argument("--resamples", type=int, default=None,
                        help="bootstrap resamples of each family of comparisons (default: 20 m / alpha for its m "
                             "pairs, labkit.stats.compare_all's rule; 42,000 for 15 methods)")
    parser.add_argument("--seed", type=int, default=0, help="the first noise seed")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"),
                        help="the edits and their finishing under bfloat16 autocast (default) or in float32; "
                             "everything else is float32")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "known_factors_cpu.json"))
    parser.add_argument("--merge-available", action="store_true",
                        help="score nothing: merge, per t, the samples whose unit exists (a stopped run's first n)")
    args = parser.parse_args(argv)
    # every flag is checked here, before any work
    if not 2 <= args.samples <= 10_000:
        parser.error(f"--samples must be in [2, 10000] (park-global averages over samples), got {args.samples}")
    if not 1 <= args.k <= 32 or not args.k < args.pca_samples <= 100_000:
        parser.error(f"--k must be in [1, 32] and --pca-samples in (k, 100000], got {args.k}, {args.pca_samples}")
    if not 1 <= args.steps <= 1000 or not 1 <= args.max_rounds <= 50:
        parser.error(f"--steps must be in [1, 1000] and --max-rounds in [1, 50], got {args.steps}, {args.max_rounds}")
    if any(not 0 < f <= 1 for f in args.fractions):
        parser.error(f"--fractions must lie in (0, 1], got {args.fractions}")
    if any(not 0 < b < 1 for b in args.budgets + args.dose_budgets):
        parser.error(f"--budgets and --dose-budgets must lie in (0, 1) (RMS pixel change of images in [-1, 1]), "
                     f"got {args.budgets} and {args.dose_budgets}")
    if not 0 <= args.dose_samples <= args.samples:
        parser.error(f"--dose-samples must be in [0, --samples], got {args.dose_samples}")
    if args.resamples is not None and not 100 <= args.resamples <= 10**6 or args.seed < 0:
        parser.error(f"--resamples must be in [100, 10^6] and --seed ≥ 0, got {args.resamples}, {args.seed}")
    if "random" not in args.methods:
        parser.error("--methods must include random: it is the floor every method is read against")
    try:
        torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device must name a torch device (cpu, cuda, cuda:1), got {args.device!r} ({err})")
    out = Path(args.out)
    if out.is_dir() or out.name == "" or out.suffix != ".json":
        parser.error(f"--out must be a .json file path (not a folder), got {args.out!r}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / (out.name + ".units")).mkdir(exist_ok=True)
    except OSError as err:
        parser.error(f"--out: cannot write beside {args.out!r} ({err}); choose a folder you can write to")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    out = Path(args.out)
    set_fp32_precision(args.device, tf32=False)
    model = load_model(args.model, device=args.device)
    readout = load_readout()
    instrument = world_instrument(readout)
    config = {k: v for k, v in vars(args).items() if k not in ("out", "device", "resamples", "merge_available")}
    weights = {"model": weights_fingerprint(model.unet), "readout": weights_fingerprint(readout)}
    # a unit depends on its own t, not on which other t are run: --fractions is not in the key, so a run
    # of some t and a later run of all of them share their units
    unit_config = {k: v for k, v in config.items() if k != "fractions"}
    key = hashlib.sha256(json.dumps({"config": unit_config, "weights": weights, "code": code_key()},
                                    sort_keys=True).encode()).hexdigest()[:16]
    units_dir = out.parent / (out.name + ".units")
    start = time.perf_counter()
    shared: dict[float, dict] = {}  # per t, computed when first needed
    # sample by sample, every t for each: a run stopped early holds the first n samples at every t
    for i in range(0 if args.merge_available else args.samples):
        for fraction in args.fractions:
            path = _unit_path(units_dir, key, fraction, args.seed + i)
            if path.exists():
                continue
            if fraction not in shared:
                shared[fraction] = shared_directions(model, fraction, args)
            record = score_unit(model, shared[fraction], i, args, readout, instrument)
            write_json(path, _rounded({"key": key, **record}), compact=True)
            print(f"sample {args.seed + i}, t = {fraction} T ({record['t']}): {record['seconds']:.0f} s "
                  f"(load {record['load_average']})", flush=True)
    # per t, the samples that have its unit (all of them after a full run; the first n after a stopped one);
    # a t with fewer than two is left out of the report
    present = {f: [args.seed + i for i in range(args.samples) if _unit_path(units_dir, key, f, args.seed + i).exists()]
               for f in args.fractions}
    merged = {str(f): len(seeds) for f, seeds in present.items() if len(seeds) >= 2}
    if not merged:
        raise SystemExit(f"no t has units of 2 samples in {units_dir} for this configuration (key {key}; per t: "
                         f"{ {f: len(v) for f, v in present.items()} }): run without --merge-available first")
    units = [json.loads(_unit_path(units_dir, key, f, seed).read_text())
             for f in args.fractions if str(f) in merged for seed in present[f]]
    seconds = sum(u["seconds"] for u in units)
    report = {
        "model": args.model, "weights_sha256": weights, "factors": list(worlds.FACTORS), "config": config,
        "key": key, "samples_merged": merged,
        "timing": {"unit_seconds_total": round(seconds, 1), "units": len(units),
                   "seconds_per_unit_median": sorted(u["seconds"] for u in units)[len(units) // 2],
                   "load_average_per_unit_median": sorted(u["load_average"] for u in units)[len(units) // 2],
                   "this_call_seconds": round(time.perf_counter() - start, 1), "torch_threads": torch.get_num_threads(),
                   "cpu_cores": os.cpu_count(), "device": args.device},
        **merge(units, args),
        # the per-sample records stay in their own files (committed once each), not copied into
        # the report that every merge rewrites
        "units_folder": units_dir.name,
    }
    write_json(out, report, compact=True)
    print_tables(report)
    print(f"\nsamples per t (of {args.samples}): {merged}; {len(units)} units, {seconds:.0f} s of unit time; "
          f"wrote {out}")
    return report


def _rounded(value):
    """Floats to 5 significant digits (units are committed: every kilobyte is in every clone)."""
    if isinstance(value, float):
        return value if not math.isfinite(value) else float(f"{value:.5g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _unit_path(units_dir: Path, key: str, fraction: float, seed: int) -> Path:
    return units_dir / f"{key}-f{fraction}-s{seed}.json"


def print_tables(report: dict) -> None:
    fractions = [str(f) for f in report["config"]["fractions"]]
    for m in ("disentanglement", "dci_d", "side_effect", "on_manifold", "change"):
        print(f"\n{m}: mean [95% bootstrap interval] over samples")
        print(f"{'method/edit':22s}" + "".join(f"{'t=' + f + 'T':>22s}" for f in fractions))
        for key, cell in report["summary"].items():
            row = "".join(f"{'n/a':>22s}" if f not in cell else
                          f"{cell[f][m]['mean']:>8.3f} [{cell[f][m]['low']:.3f}, {cell[f][m]['high']:.3f}]"
                          for f in fractions)
            print(f"{key:22s}{row}")
    print("\nunmatched edits per method:", report["edits"]["unmatched"])


if __name__ == "__main__":
    main()
