"""How good is the embedded model? Sample digits, classify them, look for copies.

    python benchmarks/model_quality.py                      # the shipped model, 1,000 samples
    python benchmarks/model_quality.py --model runs/ddpm --samples 200 --out artifacts/q

Samples ``--samples`` digits with DDIM (50 steps, η = 0, seeded, in batches; with
``--quality-boost``, η = 1 for t ≤ 0.2 T, the sampler that ends every edit of the book and that
benchmarks/world_quality.py uses) and reports:

- the share the digit classifier (labkit.classifier) labels with confidence ≥ 0.9, next to the
  same share on real held-out digits (from the classifier's record), the reference a perfect
  model would reach;
- the class histogram of the predicted labels: are all ten digits there, is any over 20%?
- a memorisation check: the distance from each sample to its nearest training image, compared
  with the distance from each training image to its nearest *other* training image. A model
  that drew fresh digits from the data distribution would give the same distribution for
  both; a model that copies training images would give many samples far closer than any two
  training images are to each other;
- the digit measures (labkit.measures) of samples and training digits, side by side;
- a grid of the first 64 samples (samples.png) and the 8 samples closest to a training image,
  each next to that image (nearest.png).

Writes OUT/quality.json, OUT/samples.png, OUT/nearest.png and prints a table. Distances are
Euclidean over the 784 pixels in [-1, 1]; divide by 28 for a root-mean-square per pixel.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import DDIMScheduler, UNet2DModel  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from labkit.checks import int_arg, out_dir_arg  # noqa: E402
from labkit.classifier import EMBEDDED_CLASSIFIER, classify, load_classifier  # noqa: E402
from labkit.data import load_digits, to_pixel_range  # noqa: E402
from labkit.diffusion import QUALITY_BOOST  # noqa: E402
from labkit.files import write_json  # noqa: E402
from labkit.measures import digit_measures  # noqa: E402
from labkit.models import ModelUnavailableError, load_model  # noqa: E402

EMBEDDED_MODEL = Path(__file__).resolve().parents[1] / "labkit" / "embedded"


def _shown(path: str) -> str:
    """A path as the report shows it: relative to the repository when inside it (no home folders)."""
    resolved = Path(path).resolve()
    root = EMBEDDED_MODEL.parents[1]
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else path


@torch.inference_mode()
def ddim_samples(
    unet: UNet2DModel, scheduler: DDIMScheduler, n: int, batch_size: int, seed: int, boost_below: int | None = None
) -> tuple[torch.Tensor, float]:
    """n samples by DDIM from seeded noise; returns (samples, seconds).

    Deterministic (η = 0), except that steps with t ≤ ``boost_below`` use η = 1 when it is given.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    t0 = time.perf_counter()
    for start in tqdm(range(0, n, batch_size), desc="sampling (batches)"):
        x = torch.randn(min(batch_size, n - start), 1, 28, 28, generator=gen)
        for t in scheduler.timesteps:
            eta = 1.0 if boost_below is not None and t <= boost_below else 0.0
            x = scheduler.step(unet(x, t).sample, t, x, eta=eta, generator=gen).prev_sample
        out.append(x)
    return torch.cat(out), time.perf_counter() - t0


def nearest_distances(
    queries: torch.Tensor, references: torch.Tensor, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query, the Euclidean distance to its nearest reference and that reference's index.

    With ``exclude_self`` (queries are the references), each item's distance to itself is ignored.
    """
    q, r = queries.flatten(1).double(), references.flatten(1).double()
    best, index = [], []
    for start in range(0, len(q), 500):
        d = torch.cdist(q[start : start + 500], r)
        if exclude_self:
            rows = torch.arange(len(d))
            d[rows, rows + start] = float("inf")
        value, where = d.min(dim=1)
        best.append(value)
        index.append(where)
    return torch.cat(best), torch.cat(index)


def _summary(d: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(d, torch.tensor([0.01, 0.05, 0.5], dtype=d.dtype)).tolist()
    return {"min": round(d.min().item(), 3), "p1": round(q[0], 3), "p5": round(q[1], 3), "median": round(q[2], 3)}


def save_grid(images: torch.Tensor, path: Path, columns: int = 8, scale: int = 3) -> None:
    """Tile images (N, 1, 28, 28) in [-1, 1] into a grid with 2-pixel grey gaps and save it as a PNG."""
    pixels = to_pixel_range(images)[:, 0].numpy()
    rows = -(-len(pixels) // columns)
    side = 28 + 2
    canvas = np.full((rows * side + 2, columns * side + 2), 0.5)
    for i, image in enumerate(pixels):
        r, c = divmod(i, columns)
        canvas[2 + r * side : 2 + r * side + 28, 2 + c * side : 2 + c * side + 28] = image
    plt.imsave(path, np.kron(canvas, np.ones((scale, scale))), cmap="gray", vmin=0, vmax=1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(EMBEDDED_MODEL), help="folder in diffusers layout (unet/, scheduler/)")
    parser.add_argument("--classifier", default=str(EMBEDDED_CLASSIFIER),
                        help="folder written by labkit.train classifier")
    parser.add_argument("--samples", type=int_arg(1, 100_000), default=1000)
    parser.add_argument("--batch-size", type=int_arg(1, 4096), default=250)
    parser.add_argument("--steps", type=int_arg(1, 1000), default=50, help="DDIM steps")
    parser.add_argument("--seed", type=int_arg(0, 2**63 - 1), default=0)
    parser.add_argument("--quality-boost", action="store_true",
                        help=f"η = 1 for t ≤ {QUALITY_BOOST} T (the book's sampler); default: η = 0 throughout")
    parser.add_argument("--out", type=out_dir_arg, default="artifacts/model_quality",
                        help="folder for quality.json and the PNGs (checked writable before any work)")
    args = parser.parse_args(argv)
    out = args.out
    try:  # load_model: safetensors only, the hub's 5 s deadline, a clear message
        model = load_model(args.model)
    except (ModelUnavailableError, ValueError, TypeError) as err:
        parser.error(f"argument --model: {err}")
    try:  # before the sampling, not after it
        classifier = load_classifier(args.classifier)
        reference = json.loads((Path(args.classifier) / "config.json").read_text())["heldout"]
    except (OSError, ValueError, KeyError) as err:
        parser.error(f"argument --classifier: {err}")
    if model.sample_shape != (1, 28, 28):
        parser.error(f"argument --model: this benchmark judges digits, it needs a model of 1×28×28 images; "
                     f"{args.model!r} draws {model.sample_shape}")
    if args.steps > model.num_train_timesteps:
        parser.error(f"argument --steps: at most the model's T = {model.num_train_timesteps}, got {args.steps}")
    # the sampler of the model's own scheduler config (as DDIMScheduler.from_pretrained reads it)
    unet, scheduler = model.unet, DDIMScheduler.from_config(model.schedule)
    scheduler.set_timesteps(args.steps)
    load_before = os.getloadavg()[0]  # other work on the machine slows sampling: record it
    boost_below = int(QUALITY_BOOST * scheduler.config.num_train_timesteps) if args.quality_boost else None
    samples, seconds = ddim_samples(unet, scheduler, args.samples, args.batch_size, args.seed, boost_below)
    load_after = os.getloadavg()[0]
    forwards = -(-args.samples // args.batch_size) * args.steps

    prediction = classify(samples, classifier)
    counts = torch.bincount(prediction.label, minlength=10)
    shares = counts / args.samples

    train, _ = load_digits()
    sample_nn, sample_nn_index = nearest_distances(samples, train)
    train_nn, _ = nearest_distances(train, train, exclude_self=True)
    train_p1 = torch.quantile(train_nn, 0.01).item()

    sample_measures, train_measures = digit_measures(samples), digit_measures(train)
    report = {
        "model": _shown(args.model),
        "classifier": _shown(args.classifier),
        "samples": args.samples,
        "sampler": {"name": "DDIM", "steps": args.steps, "eta": 0.0,
                    "eta_1_below": QUALITY_BOOST if args.quality_boost else None,
                    "seed": args.seed, "batch_size": args.batch_size},
        "timing": {
            "seconds": round(seconds, 1),
            "ms_per_forward": round(1000 * seconds / forwards, 1),
            "ms_per_image": round(1000 * seconds / args.samples, 1),
            "torch_threads": torch.get_num_threads(),
            "cpu_cores": os.cpu_count(),
            "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
        },
        "classifier_confidence": {
            "share_confident_0.9": round((prediction.confidence >= 0.9).float().mean().item(), 4),
            "real_heldout_share_confident_0.9": reference["share_confident_0.9"],
            "real_heldout_accuracy": reference["accuracy"],
        },
        "classes": {
            "counts": counts.tolist(),
            "all_ten_present": bool((counts > 0).all()),
            "max_share": round(shares.max().item(), 4),
            "most_common": int(shares.argmax()),
            "min_share": round(shares.min().item(), 4),
        },
        "memorisation": {
            "sample_to_nearest_training": _summary(sample_nn),
            "training_to_nearest_other_training": _summary(train_nn),
            "median_ratio": round((sample_nn.median() / train_nn.median()).item(), 3),
            "share_samples_below_training_p1": round((sample_nn < train_p1).float().mean().item(), 4),
        },
        "measures": {
            name: {
                "samples_mean": round(sample_measures[name].nanmean().item(), 3),
                "samples_std": round(float(np.nanstd(sample_measures[name].numpy())), 3),
                "training_mean": round(train_measures[name].nanmean().item(), 3),
                "training_std": round(float(np.nanstd(train_measures[name].numpy())), 3),
            }
            for name in sample_measures
        },
    }
    write_json(out / "quality.json", report)
    save_grid(samples[:64], out / "samples.png")
    closest = sample_nn.argsort()[:8]
    pairs = torch.stack([samples[closest], train[sample_nn_index[closest]]], dim=1).flatten(0, 1)
    save_grid(pairs, out / "nearest.png", columns=4)  # each sample, then its nearest training image

    c, m, t = report["classifier_confidence"], report["memorisation"], report["timing"]
    classes = report["classes"]
    rows = [
        ("samples (DDIM, η=0" + (f", η=1 for t ≤ {QUALITY_BOOST} T)" if args.quality_boost else ")"),
         f"{args.samples} × {args.steps} steps, batch {args.batch_size}"),
        ("sampling time",
         f"{t['seconds']} s ({t['ms_per_forward']} ms per batched forward, {t['ms_per_image']} ms per image)"),
        ("machine",
         f"{t['cpu_cores']} cores, {t['torch_threads']} torch threads, load average {t['load_average_before_after']}"),
        ("classifier confidence ≥ 0.9", f"{c['share_confident_0.9']:.1%} of samples "
                                        f"(real held-out digits: {c['real_heldout_share_confident_0.9']:.1%})"),
        ("class counts 0..9", " ".join(str(k) for k in counts.tolist())),
        ("all ten present / max share", f"{classes['all_ten_present']} / {classes['max_share']:.1%} "
                                        f"(digit {classes['most_common']})"),
        ("NN distance sample→train", "min {min}, p5 {p5}, median {median}".format(**m["sample_to_nearest_training"])),
        ("NN distance train→train",
         "min {min}, p5 {p5}, median {median}".format(**m["training_to_nearest_other_training"])),
        ("samples closer than train p1", f"{m['share_samples_below_training_p1']:.1%} (fresh digits: ≈1%)"),
    ] + [
        (f"{name} (samples | training)",
         f"{v['samples_mean']} ± {v['samples_std']} | {v['training_mean']} ± {v['training_std']}")
        for name, v in report["measures"].items()
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    print(f"wrote {out / 'quality.json'}, {out / 'samples.png'}, {out / 'nearest.png'}")
    return report


if __name__ == "__main__":
    main()
