"""The dimension of the shapes world's manifold, as the model's score sees it (Stanczuk et al., ICML 2024).

    python benchmarks/manifold_dimension.py                      # the committed run
    python benchmarks/manifold_dimension.py --samples 2 --draws 512 --timesteps 10 --out /tmp/md.json

A scene of labkit.worlds is made by six continuous factors (three hues, scale, x-position,
rotation) and one categorical one (the shape), so its images lie on a 6-dimensional manifold of
R^3072 (one sheet per shape). labkit.dimension estimates the dimension from the score alone: at a
point x₀, perturb it ``--draws`` times at a small timestep t, stack the model's scores
−ε_θ(x_t, t)/√(1 − ᾱ_t), and read d̂ = D − k off the largest drop of their singular values
(k above the drop: the normal space). Two kinds of x₀, each through the same model:

- ``sample``: the model's own samples (noise seeds SEED..SEED+N−1, deterministic DDIM with
  ``--steps`` steps down to x₀, not clamped), the points the chapter edits;
- ``render``: true renders of the world (labkit.worlds.render of sample_factors(N, SEED)), the
  control: these lie on the true 6-dimensional manifold exactly.

The timesteps: t = 5, 10, 20 of the 1,000-step training schedule, where √(1 − ᾱ_t) = 0.030, 0.047,
0.079 (per pixel, images in [-1, 1]). Small enough that the noise is far below the size of the
world's factors in the image (moving the object by one pixel changes its edge pixels by about 1),
so the score points back to the manifold (the estimator's premise); large enough that the model
has been trained there (t is drawn uniformly from 0..999 in training) and its ε is not the bare
identity. Three values, so that an estimate that depends on the choice of t shows.

For each (x₀, t) the script reports d̂ three ways: labkit's default (centred scores, the largest
drop of log σ), centred with the paper's linear drop σ_k − σ_{k+1} (``gap="linear"``), and the
paper's exact recipe (uncentred scores, linear drop); the size of the default's drop, as the ratio
σ_k/σ_{k+1} and as its multiple of the runner-up drop; and σ_1/σ_2 of the uncentred matrix.
Writes ``--out`` (JSON: every estimate, the spectra at every 16th index and in full over the last
64, timing with the load average) and prints a table. The chapter book/part2-diffusion/08_known_factors.ipynb shows it.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch

from labkit import worlds
from labkit.cache import weights_fingerprint
from labkit.checks import int_arg
from labkit.diffusion import ddim_sample, sample_noise
from labkit.dimension import drops, estimate_dimension, score_matrix, singular_values
from labkit.files import write_json
from labkit.models import load_model, resolve_device, set_fp32_precision

REPO = Path(__file__).resolve().parents[1]
TRUE_DIMENSION = sum(f.kind != "categorical" for f in worlds.FACTORS.values())  # 6
WORLD_D = 3 * worlds.IMAGE_SIZE**2  # the ambient dimension D of the world's images
TAIL, STRIDE = 64, 16  # the spectra kept in the JSON: the last TAIL values in full, every STRIDE-th before


def kept_indices(length: int) -> list[int]:
    """1-based indices of the singular values written out: 1, 1 + STRIDE, … then the last TAIL in full."""
    head = list(range(1, max(length - TAIL, 0) + 1, STRIDE))
    return head + list(range(max(length - TAIL, 0) + 1, length + 1))


def rounded(values: torch.Tensor, index: list[int]) -> list[float]:
    return [float(f"{float(values[i - 1]):.4g}") for i in index]


def estimates(centred: torch.Tensor, raw: torch.Tensor) -> dict:
    """d̂ three ways, and the size of the default rule's drop (log₁₀ σ_k − log₁₀ σ_(k+1))."""
    top = drops(centred).topk(2)
    k = int(top.indices[0]) + 1
    return {
        "d": estimate_dimension(centred),
        "d_linear": estimate_dimension(centred, gap="linear"),
        "d_paper": estimate_dimension(raw, gap="linear"),
        "k": k,
        "drop_ratio": round(float(centred[k - 1] / centred[k]), 3),  # σ_k / σ_(k+1)
        "drop_over_second": round(float(top.values[0] / top.values[1]), 3),  # the largest drop / the runner-up
        "raw_sigma_1_over_2": round(float(raw[0] / raw[1]), 3),  # the uncentred matrix's mean-score outlier
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes", help="the shapes model (default) or a folder with another one")
    parser.add_argument("--samples", type=int_arg(1, 1000), default=3,
                        help="points of each kind: model samples (seeds SEED..SEED+N−1) and true renders")
    parser.add_argument("--timesteps", type=int_arg(0, 999), nargs="+", default=[5, 10, 20],
                        help="small timesteps of the training schedule")
    parser.add_argument("--draws", type=int_arg(WORLD_D + 1, 1_000_000), default=4096,
                        help=f"noise draws per (point, t); more than D = {WORLD_D}: the centred scores have rank "
                             "≤ draws − 1, and all D − d normal directions must show")
    parser.add_argument("--steps", type=int_arg(1, 1000), default=20, help="DDIM steps of the model samples")
    parser.add_argument("--batch-size", type=int_arg(1, 100_000), default=256)
    parser.add_argument("--seed", type=int_arg(0, 2**31), default=0, help="the first noise seed; the renders' seed")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "manifold_dimension_cpu.json"))
    args = parser.parse_args(argv)
    # every flag is checked here, before any work
    if len(set(args.timesteps)) != len(args.timesteps):
        parser.error(f"--timesteps must not repeat, got {args.timesteps}")
    try:
        resolve_device(args.device)
    except (TypeError, ValueError, RuntimeError) as err:
        parser.error(f"--device: {err}")
    out = Path(args.out)
    if out.is_dir() or out.suffix != ".json":
        parser.error(f"--out must be a .json file path (not a folder), got {args.out!r}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / (out.name + ".probe")
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        parser.error(f"--out: cannot write beside {args.out!r} ({err}); choose a folder you can write to")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    set_fp32_precision(args.device, tf32=False)
    model = load_model(args.model, device=args.device)
    D = math.prod(model.sample_shape)
    if D != WORLD_D:
        raise SystemExit(f"--model {args.model!r} makes {model.sample_shape} images, not the world's "
                         f"(3, {worlds.IMAGE_SIZE}, {worlds.IMAGE_SIZE}); pass the shapes model")
    start, load_before = time.perf_counter(), os.getloadavg()
    seeds = [args.seed + i for i in range(args.samples)]
    points = {"sample": [ddim_sample(model, sample_noise(model, 1, s), args.steps) for s in seeds],
              "render": list(worlds.render(worlds.sample_factors(args.samples, seed=args.seed))
                             .to(model.device, model.dtype).split(1))}
    index = kept_indices(D)
    rows = []
    for kind, xs in points.items():
        for i, x0 in enumerate(xs):
            for t in args.timesteps:
                unit_start = time.perf_counter()
                scores = score_matrix(lambda x: model.eps(x, t), x0, float(model.alphas_cumprod[t]), args.draws,
                                      seed=args.seed, batch_size=args.batch_size)
                centred, raw = singular_values(scores), singular_values(scores, centred=False)
                row = {"kind": kind, "point": i, "seed": seeds[i], "t": t,
                       "sigma_t": round(math.sqrt(1 - float(model.alphas_cumprod[t])), 5),
                       **estimates(centred, raw), "seconds": round(time.perf_counter() - unit_start, 1),
                       "load_average": round(os.getloadavg()[0], 2),
                       "spectrum_centred": rounded(centred, index), "spectrum_raw": rounded(raw, index)}
                rows.append(row)
                print(f"{kind} {i} t={t}: d̂ = {row['d']} ({row['seconds']} s, load {row['load_average']})", flush=True)
    seconds = time.perf_counter() - start

    summary = {}
    for kind in points:
        for t in args.timesteps:
            cell = [r for r in rows if r["kind"] == kind and r["t"] == t]
            summary[f"{kind}/t={t}"] = {rule: sorted(r[rule] for r in cell) for rule in ("d", "d_linear", "d_paper")}
    report = {
        "model": args.model, "weights_sha256": {"model": weights_fingerprint(model.unet)},
        "true_dimension": TRUE_DIMENSION, "ambient_dimension": D,
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "device")},
        "rules": {"d": "centred scores, largest drop in log10 σ (labkit default)",
                  "d_linear": "centred scores, largest linear drop σ_k − σ_(k+1)",
                  "d_paper": "uncentred scores, largest linear drop (Stanczuk et al., Algorithm 1)"},
        "timing": {"seconds": round(seconds, 1), "units": len(rows),
                   "seconds_per_unit": round(sum(r["seconds"] for r in rows) / len(rows), 1),
                   "torch_threads": torch.get_num_threads(), "cpu_cores": os.cpu_count(), "device": args.device,
                   "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
        "spectrum_index": index,
        "summary": summary,
        "rows": rows,
    }
    write_json(args.out, report)

    print(f"\nD = {D}, true dimension {TRUE_DIMENSION}; {args.draws} draws per (point, t); "
          f"d̂ = D − k, k the position of the largest drop σ_k → σ_(k+1)")
    print(f"{'kind':<7} {'pt':>2} {'t':>3} {'σ_t':>6} {'d̂':>4} {'d̂ linear':>9} {'d̂ paper':>8} "
          f"{'σ_k/σ_k+1':>10} {'drop/2nd':>9} {'raw σ1/σ2':>10}")
    for r in rows:
        print(f"{r['kind']:<7} {r['point']:>2} {r['t']:>3} {r['sigma_t']:>6.3f} {r['d']:>4} {r['d_linear']:>9} "
              f"{r['d_paper']:>8} {r['drop_ratio']:>10.2f} {r['drop_over_second']:>9.2f} "
              f"{r['raw_sigma_1_over_2']:>10.2f}")
    for name, cell in summary.items():
        print(f"{name:<14} d̂: {cell['d']}   linear: {cell['d_linear']}   paper: {cell['d_paper']}")
    print(f"{len(rows)} units in {seconds:.0f} s ({report['timing']['seconds_per_unit']} s per unit), load average "
          f"{report['timing']['load_average_before_after']}; wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
