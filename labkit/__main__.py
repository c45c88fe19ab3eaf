"""Command line: discover a sample's semantic directions and write an edit strip and the basis.

    python -m labkit directions --fraction 0.6 --k 5 --seed 0 --out runs/directions
    python -m labkit directions --model google/ddpm-cifar10-32 --device cuda --fraction 0.8
    python -m labkit directions --image my_digit.png --out runs/my_digit   # edit a given image
    python -m labkit analyze --samples 8 --fraction 0.2 0.6 1.0 --k 10 --out runs/analysis  # labkit.analysis
    python -m labkit directions --model shapes-sd --prompt "a red square" --guidance-scale 3  # a text-conditioned model

For researchers who never open the book. It samples x_T from the seed and runs DDIM to the
timestep t nearest fraction·T (or, with --image, inverts that image to t by DDIM inversion), finds
the top-k right singular vectors of ∂h/∂x_t (labkit.spectral.local_basis), edits along each
with x-space guidance at several strengths, and writes OUT/basis.safetensors and OUT/strip.png
(one row per direction, one column per strength). For a Stable Diffusion pipeline (labkit.latent)
everything happens in the VAE latent under --prompt and --guidance-scale, and the strip is decoded
to pixels for display.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from labkit.checks import file_arg, float_arg, int_arg, out_dir_arg  # noqa: E402
from labkit.data import read_image  # noqa: E402
from labkit.diffusion import QUALITY_BOOST, invert_image, sample_at, timestep_at  # noqa: E402
from labkit.editing import edit, sample_basis, save_basis  # noqa: E402
from labkit.hspace import h_shape  # noqa: E402
from labkit.latent import LatentDiffusionModel, PromptError, to_pixels, with_prompt  # noqa: E402
from labkit.models import (  # noqa: E402
    DiffusionModel,
    ModelUnavailableError,
    load_model,
    resolve_device,
    set_fp32_precision,
)
from labkit.plot import image_grid  # noqa: E402


def directions(args: argparse.Namespace, model: DiffusionModel, image: torch.Tensor | None) -> Path:
    set_fp32_precision(args.device, tf32=False)  # IEEE float32 on a GPU too (not torch's default TF32 convs)
    t = timestep_at(model, args.fraction, args.steps)  # the integer timestep, as everywhere in labkit
    if image is None:
        sample = sample_at(model, args.seed, t, args.steps, progress=True)
    else:
        sample = invert_image(model, image, t, args.steps, progress=True)
    basis = sample_basis(model, sample, args.k, method=args.method, progress=True)
    out = args.out
    save_basis(basis, out / "basis.safetensors",
               {"model": model.name, "t": t, "seed": sample.seed, "image": args.image, "k": args.k,
                "num_steps": args.steps})
    strengths = torch.linspace(-args.strength, args.strength, args.columns)
    # A given image is finished with η = 0 throughout, so strength 0 gives it back.
    boost = QUALITY_BOOST if image is None else None
    rows = [to_pixels(model, edit(model, sample, basis.v[i], strengths, boost_below=boost)).cpu()
            for i in tqdm(range(args.k), desc="edit (one row per direction)")]
    fig = image_grid(rows, row_labels=[f"v{i + 1}\nσ={float(basis.sigma[i]):.3g}" for i in range(args.k)],
                     col_titles=[f"γ={float(g):.2g}" for g in strengths], size=1.2)
    fig.suptitle(f"{model.name}: {'seed ' + str(args.seed) if image is None else Path(args.image).name}, t = {t}")
    fig.tight_layout()
    fig.savefig(out / "strip.png", dpi=120)
    plt.close(fig)
    print(f"t = {t}; singular values: {', '.join(f'{s:.4g}' for s in basis.sigma.tolist())}")
    print(f"residuals ≤ {basis.residual.max().item():.2e}; {basis.n_jvp} JVPs, {basis.n_vjp} VJPs")
    print(f"wrote {out / 'basis.safetensors'} and {out / 'strip.png'}")
    return out


def device_arg(text: str) -> torch.device:
    """argparse type: a device this torch can use."""
    try:
        return resolve_device(text)
    except (ValueError, RuntimeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def load_model_arg(parser: argparse.ArgumentParser, args: argparse.Namespace) -> DiffusionModel:
    """--model and --device as a loaded model, or a usage error naming --model."""
    try:
        return load_model(args.model, device=args.device)
    except (RuntimeError, ValueError, TypeError, OSError) as err:  # ModelUnavailableError is a RuntimeError
        parser.error(f"argument --model: {err}")


def add_prompt_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default=None,
                        help="a text-conditioned model's prompt (Stable Diffusion pipelines; default: unconditional)")
    parser.add_argument("--guidance-scale", type=float_arg(0.0, 100.0), default=None,
                        help="classifier-free guidance scale w, 0..100 (default 7.5 with --prompt; 1: no guidance)")


class RenamedFlag(argparse.Action):
    """A flag that was renamed: giving it is a usage error naming the new one (hidden from --help).

    --t was a fraction of T here but an integer timestep everywhere else in labkit (and
    abbreviated, it would have read as --tol); --fraction says what it is."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs="*", help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"argument {option_string}: renamed: use {self.new.split()[0]} (a fraction of T in 0..1, "
                     f"e.g. {self.new}); labkit's t is an integer timestep")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("directions", help="find and edit along a sample's top-k directions", allow_abbrev=False)
    p.add_argument("--model", default=None, help="folder or hub id (default: the embedded MNIST model)")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda")
    p.add_argument("--fraction", type=float_arg(0.0, 1.0), default=0.6,
                   help="where to edit, as a fraction of T in 0..1: the DDIM timestep t nearest fraction·T "
                        "(default 0.6)")
    p.add_argument("--t", action=RenamedFlag, new="--fraction 0.6")
    p.add_argument("--k", type=int_arg(1, 64), default=5, help="number of directions, 1..64 (default 5)")
    p.add_argument("--seed", type=int_arg(0, 2**63 - 1), default=0, help="noise seed of the sample")
    p.add_argument("--image", type=file_arg, default=None, help="edit this image file instead (PNG; the model's size)")
    p.add_argument("--steps", type=int_arg(1, 1000), default=50, help="DDIM steps, 1..T (default 50)")
    p.add_argument("--method", default="krylov", choices=["krylov", "power", "exact"])
    p.add_argument("--strength", type=float_arg(0.0, 1000.0, low_open=True), default=1.0,
                   help="largest |γ| of the strip, > 0 (default 1)")
    p.add_argument("--columns", type=int_arg(2, 25), default=7, help="strengths per row, 2..25 (default 7)")
    p.add_argument("--out", type=out_dir_arg, default="labkit-directions",
                   help="output folder (created; checked writable before any work)")
    add_prompt_args(p)
    a = sub.add_parser("analyze", help="local bases and their statistics over samples × timesteps (torchrun-ready)",
                       allow_abbrev=False)
    a.add_argument("--model", default=None, help="folder or hub id (default: the embedded MNIST model)")
    a.add_argument("--samples", type=int_arg(1, 100_000), default=4, help="number of samples (seeds 0..N-1, default 4)")
    a.add_argument("--fraction", type=float_arg(0.0, 1.0, low_open=True), nargs="+", default=[0.2, 0.6, 1.0],
                   help="timesteps as fractions of T in (0, 1], each the DDIM step nearest fraction·T "
                        "(default 0.2 0.6 1.0)")
    a.add_argument("--t", action=RenamedFlag, new="--fraction 0.2 0.6 1.0")
    a.add_argument("--k", type=int_arg(1, 50), default=10, help="directions per unit, 1..50 (default 10)")
    a.add_argument("--steps", type=int_arg(1, 1000), default=50, help="DDIM steps, 1..T (default 50)")
    a.add_argument("--tol", type=float_arg(0.0, 1.0, low_open=True, high_open=True), default=1e-4,
                   help="local basis residual tolerance (default 1e-4)")
    a.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda (under torchrun: one GPU per rank)")
    a.add_argument("--out", type=out_dir_arg, required=True,
                   help="output folder (units/ and results.json; created, checked writable before any work)")
    add_prompt_args(a)
    args = parser.parse_args(argv)
    if args.command == "analyze":
        analyze(parser, args)
        return
    model = load_model_arg(parser, args)
    try:
        model = with_prompt(model, args.prompt, args.guidance_scale)
    except PromptError as err:
        parser.error(f"argument --prompt/--guidance-scale: {err}")
    if args.steps > model.num_train_timesteps:
        parser.error(f"argument --steps: must be at most the model's T = {model.num_train_timesteps}, got {args.steps}")
    m = math.prod(h_shape(model))
    if args.k > min(m, math.prod(model.sample_shape)):
        parser.error(f"argument --k: this model has {min(m, math.prod(model.sample_shape))} directions at most "
                     f"(min of x's {math.prod(model.sample_shape)} and h's {m} numbers), got {args.k}")
    image = None
    if args.image is not None:
        try:
            if isinstance(model, LatentDiffusionModel):  # a picture, encoded to the VAE latent
                with torch.no_grad():
                    image = model.encode(read_image(args.image, model.image_shape))
            else:
                image = read_image(args.image, model.sample_shape).to(model.device, model.dtype)
        except (ValueError, OSError) as err:
            parser.error(f"argument --image: {err}")
    directions(args, model, image)


def analyze(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from labkit.analysis import Job, check_out, run

    if len(set(args.fraction)) != len(args.fraction):
        parser.error(f"argument --fraction: the fractions must be distinct, got {args.fraction}")
    try:
        check_out(args.out)
    except FileExistsError as err:
        parser.error(f"argument --out: {err}")
    set_fp32_precision(args.device, tf32=False)  # IEEE float32 on a GPU, as `directions`
    try:  # the model is loaded first of all, before any unit is computed
        path = run(Job(args.model, args.samples, tuple(args.fraction), args.k, Path(args.out), args.steps, args.tol,
                       str(args.device), args.prompt, args.guidance_scale))
    except ModelUnavailableError as err:
        parser.error(f"argument --model: {err}")
    except PromptError as err:
        parser.error(f"argument --prompt/--guidance-scale: {err}")
    if path is not None:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
