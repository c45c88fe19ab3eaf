"""How good is the shapes model? Its samples, measured in the world's own terms.

    python benchmarks/world_quality.py                       # the shipped model, 1,000 samples
    python benchmarks/world_quality.py --samples 200 --out artifacts/wq

A scene of labkit.worlds is fully described by its factors, so a sample can be checked by
*re-rendering*: read its factors with the read-out (labkit.readout), render them
(labkit.worlds.render), and take the root-mean-square pixel difference e(x) (labkit.scoring.
rerender_error). A true render comes back almost exactly (the read-out's error only); a sample
that is not a scene of the world does not. The report:

- the threshold: the error that 99% of ``--samples`` true renders meet (fresh factors, seed 10⁶);
- the share of ``--samples`` model samples (DDIM, 50 steps, η = 1 below 0.2 T as every edit in
  the book ends, seeded) whose error is within it (goal: ≥ 90%);
- each factor's histogram over its range, samples next to true renders (does the model cover the
  whole range?), and the shape counts.

Writes OUT/quality.json (default: next to the model, labkit/embedded/shapes/quality.json) and
prints a table. The chapter book/part2-diffusion/08_known_factors.ipynb shows it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from labkit import worlds
from labkit.cache import weights_fingerprint
from labkit.checks import int_arg, out_dir_arg
from labkit.diffusion import QUALITY_BOOST, ddim_sample, sample_noise
from labkit.files import write_json
from labkit.models import EMBEDDED_MODELS, ModelUnavailableError, load_model
from labkit.readout import load_readout, read_factors
from labkit.scoring import rerender_error, world_instrument

BINS = 10
REPO = Path(__file__).resolve().parents[1]


def histograms(factors: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Counts in BINS equal bins over each factor's range (the shape: counts per shape)."""
    counts = {}
    for name, f in worlds.FACTORS.items():
        value = factors[name].double()
        if f.kind == "categorical":
            counts[name] = torch.bincount(value.long(), minlength=len(f.values)).tolist()
        else:
            index = ((value - f.low) / (f.high - f.low) * BINS).floor().clamp(0, BINS - 1).long()
            counts[name] = torch.bincount(index, minlength=BINS).tolist()
    return counts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes", help="the shapes model (default) or a folder with another one")
    # --samples: the true renders are drawn in one render call (labkit.worlds' bound: 16,384 at 32×32)
    parser.add_argument("--samples", type=int_arg(1, 16_384), default=1000)
    parser.add_argument("--batch-size", type=int_arg(1, 4096), default=250)
    parser.add_argument("--steps", type=int_arg(1, 1000), default=50, help="DDIM steps")
    parser.add_argument("--seed", type=int_arg(0, 2**62), default=0)
    parser.add_argument("--out", type=out_dir_arg, default=str(EMBEDDED_MODELS["shapes"].parent),
                        help="folder for quality.json (checked writable before any work)")
    args = parser.parse_args(argv)
    out = args.out
    try:  # load_model: safetensors only, the hub's 5 s deadline, a clear message
        model = load_model(args.model)
    except (ModelUnavailableError, ValueError, TypeError) as err:
        parser.error(f"argument --model: {err}")
    if model.sample_shape != (3, worlds.IMAGE_SIZE, worlds.IMAGE_SIZE):
        parser.error(f"argument --model: the read-out reads 3×32×32 scenes; {args.model!r} draws {model.sample_shape}")
    if args.steps > model.num_train_timesteps:
        parser.error(f"argument --steps: at most the model's T = {model.num_train_timesteps}, got {args.steps}")

    readout_model = load_readout()
    readout = world_instrument(readout_model)
    true_factors = worlds.sample_factors(args.samples, seed=10**6)
    true_error = rerender_error(worlds.render(true_factors), readout)
    threshold = torch.quantile(true_error, 0.99).item()

    start, load_before = time.perf_counter(), os.getloadavg()[0]
    batches = []
    for i, first in enumerate(range(0, args.samples, args.batch_size)):
        n = min(args.batch_size, args.samples - first)
        x = sample_noise(model, n, seed=args.seed + i)
        batches.append(ddim_sample(model, x, args.steps, eta_below=int(QUALITY_BOOST * model.num_train_timesteps),
                                   seed=args.seed + i))
    samples = torch.cat(batches).clamp(-1, 1)
    seconds = time.perf_counter() - start
    error = rerender_error(samples, readout)
    read = read_factors(samples)

    report = {
        "model": str(EMBEDDED_MODELS["shapes"].relative_to(REPO)) if args.model == "shapes" else args.model,
        "weights_sha256": {"model": weights_fingerprint(model.unet), "readout": weights_fingerprint(readout_model)},
        "samples": args.samples,
        "sampler": {"name": "DDIM", "steps": args.steps, "eta": 0.0, "eta_1_below": QUALITY_BOOST,
                    "seed": args.seed, "batch_size": args.batch_size, "clamped_to": [-1, 1]},
        "timing": {"seconds": round(seconds, 1), "ms_per_image": round(1000 * seconds / args.samples, 1),
                   "torch_threads": torch.get_num_threads(), "cpu_cores": os.cpu_count(),
                   "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "rerender": {
            "threshold_true_p99": round(threshold, 4),
            "true_median": round(true_error.median().item(), 4),
            "samples_median": round(error.median().item(), 4),
            "samples_p90": round(torch.quantile(error, 0.9).item(), 4),
            "share_samples_within_threshold": round((error <= threshold).double().mean().item(), 4),
            "goal_share": 0.9,
        },
        "histograms": {"bins": BINS, "samples": histograms(read), "true": histograms(true_factors)},
        "ranges": {name: [f.low, f.high] for name, f in worlds.FACTORS.items()},
    }
    write_json(out / "quality.json", report)

    r = report["rerender"]
    print(f"re-render error of true renders: median {r['true_median']}, 99% within {r['threshold_true_p99']}")
    print(f"re-render error of samples:      median {r['samples_median']}, 90% within {r['samples_p90']}")
    print(f"samples within the true renders' 99% error: {r['share_samples_within_threshold']:.1%} "
          f"(goal {r['goal_share']:.0%})")
    print(f"{'factor':<12} {'samples per bin (low → high)':<48} true renders per bin")
    for name in worlds.FACTORS:
        print(f"{name:<12} {' '.join(f'{c:4d}' for c in report['histograms']['samples'][name]):<48} "
              f"{' '.join(f'{c:4d}' for c in report['histograms']['true'][name])}")
    print(f"sampling: {report['timing']['seconds']} s; wrote {out / 'quality.json'}")
    return report


if __name__ == "__main__":
    main()
