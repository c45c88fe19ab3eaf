"""How good is the miniature of Stable Diffusion? Its samples and its VAE, measured in the world's own terms.

    python benchmarks/sd_quality.py                                   # shapes-sd, 1,000 samples
    python benchmarks/sd_quality.py --model runs/shapes-sd --samples 50 --out artifacts/sdq

Three measurements, each against the read-out's own error on true renders:

- **re-render error after decoding**: a sample z₀ is decoded by the VAE, its factors are read
  (labkit.readout), re-rendered (labkit.worlds.render), and e(x) = RMS pixel difference. The
  threshold is the error that 99% of ``--samples`` true renders meet; the share of samples within
  it is reported (goal ≥ 90%) for unconditional samples (the empty prompt) and for prompted ones;
- **prompt faithfulness**: each prompted sample gets a caption of fresh random factors naming a
  uniformly random number 0..7 of them (labkit.captions); the factors read from the decoded image
  are checked against every factor the caption names (``captions.faithful``: a hue within its
  colour's ±1/12, the shape exact, size, tilt and position on the named side). Reported: the share
  of samples with every named factor right (goal ≥ 90% at the default guidance scale), per factor,
  by the number of factors named, and over the captions that name at least one (about one in eight
  names none, "an object", and is right by definition); beside it the same share for true renders
  (captions of their own factors, read back by the read-out: what it scores on the world itself);
- **what the guidance scale does**: the same prompts and the same noise sampled at w = 1 (the
  prompt's own prediction, no guidance), so that fidelity and faithfulness at ``--guidance-scale``
  and at w = 1 are compared sample by sample (labkit.stats.paired_difference on the 0/1 values);
  and at ``--scales`` (default 3), so that both shares are reported along w;
- **the VAE's reconstruction error**: RMS of D(E(x)) − x on true renders, and the re-render error
  of the reconstructions next to that of the renders themselves (the read-out's own error).

Sampling: DDIM with ``--steps`` steps, η = 0 with η = 1 below 0.2 T (as every edit of the book
ends), seeded. Writes OUT/sd_quality.json and prints a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

from labkit import captions, worlds
from labkit.cache import weights_fingerprint
from labkit.checks import float_arg, int_arg, out_dir_arg
from labkit.diffusion import QUALITY_BOOST, ddim_sample, sample_noise
from labkit.files import write_json
from labkit.latent import DEFAULT_GUIDANCE, LatentDiffusionModel
from labkit.models import load_model
from labkit.readout import load_readout, read_factors
from labkit.stats import bootstrap_ci, paired_difference

REPO = Path(__file__).resolve().parents[1]


def rerender_error(images: torch.Tensor, readout) -> torch.Tensor:
    """e(x) = √(mean over pixels of (x − render(read(x)))²), (N,)."""
    redrawn = worlds.render(read_factors(images, readout))
    return ((images - redrawn) ** 2).flatten(1).mean(1).sqrt()


def sample_with_prompts(model: LatentDiffusionModel, prompts: list[str], guidance: float, steps: int, seed: int,
                        batch_size: int) -> torch.Tensor:
    """Decoded samples (N, 3, 32, 32) in [-1, 1], sample i under prompts[i] at guidance scale w.

    One batch holds several prompts: the model is bound to the stacked embeddings (B, L, D), one per
    latent of the batch (labkit.latent's U-Net call expands (1, L, D); (B, L, D) passes as it is)."""
    empty = model.encode_prompt("")
    images = []
    for i, first in enumerate(range(0, len(prompts), batch_size)):
        chunk = prompts[first:first + batch_size]
        embeds = torch.cat([model.encode_prompt(p) for p in chunk])
        batched = dataclasses.replace(model, prompt_embeds=embeds, negative_embeds=empty.expand(len(chunk), -1, -1),
                                      guidance_scale=guidance, prompt=None)
        z = ddim_sample(batched, sample_noise(model, len(chunk), seed=seed + i), steps,
                        eta_below=int(QUALITY_BOOST * model.num_train_timesteps), seed=seed + i)
        with torch.no_grad():
            images.append(model.decode(z).clamp(-1, 1))
    return torch.cat(images)


def faithfulness(prompts: list[str], read: dict[str, torch.Tensor]) -> tuple[list, dict, dict]:
    """Per image: are all factors its prompt names read back as named? Also per factor and by how many are named."""
    right, per_factor, by_count = [], {name: [] for name in worlds.FACTORS}, {}
    for i, prompt in enumerate(prompts):
        agree = captions.faithful(captions.parse_caption(prompt), {k: v[i:i + 1] for k, v in read.items()})
        ok = all(bool(a) for a in agree.values())
        right.append(ok)
        by_count.setdefault(len(agree), []).append(ok)
        for name, a in agree.items():
            per_factor[name].append(bool(a))
    return right, per_factor, by_count


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes-sd", help="the miniature (default) or a folder holding one")
    parser.add_argument("--samples", type=int_arg(2, 100_000), default=1000)
    parser.add_argument("--batch-size", type=int_arg(1, 10_000), default=250)
    parser.add_argument("--steps", type=int_arg(1, 1000), default=50, help="DDIM steps")
    parser.add_argument("--guidance-scale", type=float_arg(0.0, 100.0), default=DEFAULT_GUIDANCE)
    parser.add_argument("--scales", type=float_arg(0.0, 100.0), nargs="*", default=[3.0],
                        help="more guidance scales sampled on the same prompts and noise, for the trade-off "
                             "between fidelity and faithfulness (w = 1 and --guidance-scale always are)")
    parser.add_argument("--seed", type=int_arg(0, 2**31), default=0)
    parser.add_argument("--out", type=out_dir_arg, default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    model = load_model(args.model)
    if not isinstance(model, LatentDiffusionModel):
        parser.error(f"argument --model: {args.model!r} is not a text-conditioned pipeline")
    readout = load_readout()
    start, load_before = time.perf_counter(), os.getloadavg()

    true_factors = worlds.sample_factors(args.samples, seed=10**6)
    renders = worlds.render(true_factors)
    true_error = rerender_error(renders, readout)
    threshold = torch.quantile(true_error, 0.99).item()
    with torch.no_grad():
        recon = torch.cat([model.decode(model.encode(c)).clamp(-1, 1) for c in renders.split(args.batch_size)])
    recon_rmse = ((recon - renders) ** 2).flatten(1).mean(1).sqrt()
    recon_error = rerender_error(recon, readout)

    unconditional = sample_with_prompts(model, [""] * args.samples, 1.0, args.steps, args.seed, args.batch_size)
    prompt_factors = worlds.sample_factors(args.samples, seed=2 * 10**6 + args.seed)
    prompts = captions.random_captions(prompt_factors, torch.Generator().manual_seed(args.seed), empty=0.0)
    prompted = sample_with_prompts(model, prompts, args.guidance_scale, args.steps, args.seed + 10**5,
                                   args.batch_size)
    # the same prompts and noise without guidance: what the scale changes, sample by sample
    unguided = sample_with_prompts(model, prompts, 1.0, args.steps, args.seed + 10**5, args.batch_size)
    scales = sorted({1.0, args.guidance_scale, *args.scales})
    by_scale = {args.guidance_scale: prompted, 1.0: unguided}
    for w in scales:
        if w not in by_scale:
            by_scale[w] = sample_with_prompts(model, prompts, w, args.steps, args.seed + 10**5, args.batch_size)
    seconds = time.perf_counter() - start

    right, per_factor, by_count = faithfulness(prompts, read_factors(prompted, readout))
    # every scale read once; the default scale's is the run above
    scale_right = {w: faithfulness(prompts, read_factors(by_scale[w], readout))[0] if w != args.guidance_scale
                   else right for w in scales}
    right_unguided = scale_right[1.0]
    naming_some = [ok for ok, prompt in zip(right, prompts) if captions.parse_caption(prompt)]
    # the ceiling: captions of the true renders' own factors, checked on what the read-out reads in the renders
    true_prompts = captions.random_captions(true_factors, torch.Generator().manual_seed(args.seed), empty=0.0)
    true_right, _, _ = faithfulness(true_prompts, read_factors(renders, readout))

    def share(values) -> float | None:
        values = torch.as_tensor(values, dtype=torch.float64)
        return round(values.mean().item(), 4) if len(values) else None

    def interval(values) -> list[float]:
        """The 95% bootstrap interval of a share (labkit.stats.bootstrap_ci on the 0/1 per sample)."""
        _, low, high = bootstrap_ci(torch.as_tensor(values, dtype=torch.float64).numpy())
        return [round(low, 4), round(high, 4)]

    scale_errors = {w: rerender_error(by_scale[w], readout) for w in scales}
    errors = {"unconditional": rerender_error(unconditional, readout), "prompted": scale_errors[args.guidance_scale],
              "prompted_unguided": scale_errors[1.0]}

    def paired(a, b) -> dict:
        """a − b on the same samples, 0/1 each: mean, 95% interval, Wilcoxon p."""
        d = paired_difference(torch.as_tensor(a, dtype=torch.float64).numpy(),
                              torch.as_tensor(b, dtype=torch.float64).numpy())
        return {k: round(v, 4) if k in ("mean_difference", "low", "high") else v for k, v in d.items()}
    report = {
        "model": args.model, "samples": args.samples,
        "weights_sha256": {**{part: weights_fingerprint(getattr(model, part))
                              for part in ("unet", "vae", "text_encoder")}, "readout": weights_fingerprint(readout)},
        "sampler": {"name": "DDIM", "steps": args.steps, "eta": 0.0, "eta_1_below": QUALITY_BOOST, "seed": args.seed,
                    "guidance_scale_prompted": args.guidance_scale, "guidance_scale_unconditional": 1.0},
        "timing": {"seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
                   "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
        "rerender": {"threshold_true_p99": round(threshold, 4), "true_median": round(true_error.median().item(), 4),
                     **{f"{kind}_median": round(e.median().item(), 4) for kind, e in errors.items()},
                     **{f"{kind}_share_within": share(e <= threshold) for kind, e in errors.items()},
                     **{f"{kind}_share_within_ci95": interval(e <= threshold) for kind, e in errors.items()},
                     "goal_share": 0.9},
        "faithfulness": {"share_all_named_right": share(right), "share_all_named_right_ci95": interval(right),
                         "goal_share": 0.9,
                         "share_all_named_right_naming_some": share(naming_some),
                         "share_all_named_right_naming_some_ci95": interval(naming_some),
                         "true_renders_share_all_named_right": share(true_right),
                         "per_factor": {name: share(v) for name, v in per_factor.items()},
                         "by_number_named": {str(k): {"samples": len(v), "share": share(v)}
                                             for k, v in sorted(by_count.items())}},
        "guidance": {"scale": args.guidance_scale, "against": 1.0,
                     "faithful_unguided": share(right_unguided), "faithful_unguided_ci95": interval(right_unguided),
                     "within_minus_unguided": paired(errors["prompted"] <= threshold,
                                                     errors["prompted_unguided"] <= threshold),
                     "faithful_minus_unguided": paired(right, right_unguided)},
        # fidelity against faithfulness along w, on the same prompts and noise
        "by_scale": {f"{w:g}": {"within": share(scale_errors[w] <= threshold),
                                "within_ci95": interval(scale_errors[w] <= threshold),
                                "faithful": share(scale_right[w]), "faithful_ci95": interval(scale_right[w]),
                                "rerender_median": round(scale_errors[w].median().item(), 4)} for w in scales},
        "vae": {"reconstruction_rmse_median": round(recon_rmse.median().item(), 4),
                "reconstruction_rmse_p99": round(torch.quantile(recon_rmse, 0.99).item(), 4),
                "rerender_error_median_reconstructions": round(recon_error.median().item(), 4),
                "rerender_error_median_renders": round(true_error.median().item(), 4),
                "reconstructions_share_within": share(recon_error <= threshold)},
        "per_sample": {"prompts": prompts, "prompted_all_named_right": [bool(r) for r in right],
                       "prompted_unguided_all_named_right": [bool(r) for r in right_unguided],
                       **{f"{kind}_rerender_error": [round(x, 5) for x in e.tolist()] for kind, e in errors.items()},
                       "by_scale": {f"{w:g}": {"rerender_error": [round(x, 5) for x in scale_errors[w].tolist()],
                                               "all_named_right": [bool(r) for r in scale_right[w]]}
                                    for w in scales if w not in (1.0, args.guidance_scale)}},
    }
    path = write_json(Path(args.out) / "sd_quality.json", report)
    r, f, v = report["rerender"], report["faithfulness"], report["vae"]
    print(f"true renders' re-render error: median {r['true_median']}, 99% within {r['threshold_true_p99']}")
    print(f"within it: unconditional {r['unconditional_share_within']:.1%}, prompted (w = {args.guidance_scale:g}) "
          f"{r['prompted_share_within']:.1%} (95% interval {r['prompted_share_within_ci95']}; goal 90%)")
    print(f"prompts read back as named: {f['share_all_named_right']:.1%} {f['share_all_named_right_ci95']} "
          f"(goal 90%; true renders "
          f"{f['true_renders_share_all_named_right']:.1%}); per factor {f['per_factor']}")
    g = report["guidance"]
    within, named = g["within_minus_unguided"], g["faithful_minus_unguided"]
    print(f"same prompts and noise at w = 1: within {r['prompted_unguided_share_within']:.1%}, read back as named "
          f"{g['faithful_unguided']:.1%}; w = {args.guidance_scale:g} minus w = 1, paired: within "
          f"{within['mean_difference']:+.3f} [{within['low']}, {within['high']}], named right "
          f"{named['mean_difference']:+.3f} [{named['low']}, {named['high']}]")
    print("guidance scale | within the threshold | every named factor right   (the same prompts and noise)")
    for w, b in report["by_scale"].items():
        print(f"{w:>14} | {b['within']:.1%} {b['within_ci95']} | {b['faithful']:.1%} {b['faithful_ci95']}")
    print(f"VAE: reconstruction RMS median {v['reconstruction_rmse_median']}; re-render error of reconstructions "
          f"{v['rerender_error_median_reconstructions']} against the renders' own {v['rerender_error_median_renders']}")
    print(f"{report['timing']['seconds']} s; wrote {path}")
    return report


if __name__ == "__main__":
    main()
