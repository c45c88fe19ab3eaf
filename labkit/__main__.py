"""Command line: discover a sample's semantic directions and write an edit strip and the basis.

    python -m labkit directions --t 0.6 --k 5 --seed 0 --out runs/directions
    python -m labkit directions --model google/ddpm-cifar10-32 --device cuda --t 0.8
    python -m labkit directions --image my_digit.png --out runs/my_digit   # edit a given image
    python -m labkit analyze --samples 8 --t 0.2 0.6 1.0 --k 10 --out runs/analysis  # labkit.analysis

For researchers who never open the book. It samples x_T from the seed and runs DDIM to t (or,
with --image, inverts that image to t by DDIM inversion), finds
the top-k right singular vectors of ∂h/∂x_t (labkit.spectral.local_basis), edits along each
with x-space guidance at several strengths, and writes OUT/basis.safetensors and OUT/strip.png
(one row per direction, one column per strength).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from labkit.data import read_image  # noqa: E402
from labkit.diffusion import QUALITY_BOOST, invert_image, sample_at, timestep_at  # noqa: E402
from labkit.editing import edit, sample_basis, save_basis  # noqa: E402
from labkit.models import load_model, set_fp32_precision  # noqa: E402
from labkit.plot import image_grid  # noqa: E402


def directions(args: argparse.Namespace) -> Path:
    set_fp32_precision(args.device, tf32=False)  # true float32 on a GPU too, as in Park et al.'s code
    model = load_model(args.model, device=args.device)
    t = timestep_at(model, args.t, args.steps)
    if args.image is None:
        sample = sample_at(model, args.seed, t, args.steps)
    else:
        image = read_image(args.image, model.sample_shape).to(model.device, model.dtype)
        sample = invert_image(model, image, t, args.steps)
    basis = sample_basis(model, sample, args.k, method=args.method, progress=True)
    out = Path(args.out)
    save_basis(basis, out / "basis.safetensors",
               {"model": model.name, "t": t, "seed": sample.seed, "image": args.image, "k": args.k,
                "num_steps": args.steps})
    strengths = torch.linspace(-args.strength, args.strength, args.columns)
    # A given image is finished with η = 0 throughout, so strength 0 gives it back.
    boost = QUALITY_BOOST if args.image is None else None
    rows = [edit(model, sample, basis.v[i], strengths, boost_below=boost).cpu() for i in range(args.k)]
    fig = image_grid(rows, row_labels=[f"v{i + 1}\nσ={float(basis.sigma[i]):.3g}" for i in range(args.k)],
                     col_titles=[f"γ={float(g):.2g}" for g in strengths], size=1.2)
    fig.suptitle(f"{model.name}: {'seed ' + str(args.seed) if args.image is None else Path(args.image).name}, t = {t}")
    fig.tight_layout()
    fig.savefig(out / "strip.png", dpi=120)
    plt.close(fig)
    print(f"t = {t}; singular values: {', '.join(f'{s:.4g}' for s in basis.sigma.tolist())}")
    print(f"residuals ≤ {basis.residual.max().item():.2e}; {basis.n_jvp} JVPs, {basis.n_vjp} VJPs")
    print(f"wrote {out / 'basis.safetensors'} and {out / 'strip.png'}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("directions", help="find and edit along a sample's top-k directions")
    p.add_argument("--model", default=None, help="folder or hub id (default: the embedded MNIST model)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--t", type=float, default=0.6, help="timestep as a fraction of T (default 0.6)")
    p.add_argument("--k", type=int, default=5, help="number of directions (default 5)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the sample")
    p.add_argument("--image", default=None, help="edit this image file instead (PNG; the model's size)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--method", default="krylov", choices=["krylov", "power", "exact"])
    p.add_argument("--strength", type=float, default=1.0, help="largest |γ| of the strip (default 1)")
    p.add_argument("--columns", type=int, default=7, help="strengths per row (default 7)")
    p.add_argument("--out", default="labkit-directions", help="output folder")
    a = sub.add_parser("analyze", help="local bases and their statistics over samples × timesteps (torchrun-ready)")
    a.add_argument("--model", default=None, help="folder or hub id (default: the embedded MNIST model)")
    a.add_argument("--samples", type=int, default=4, help="number of samples (seeds 0..N-1, default 4)")
    a.add_argument("--t", type=float, nargs="+", default=[0.2, 0.6, 1.0], help="timesteps as fractions of T")
    a.add_argument("--k", type=int, default=10, help="directions per unit, 1..50 (default 10)")
    a.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    a.add_argument("--tol", type=float, default=1e-4, help="local basis residual tolerance (default 1e-4)")
    a.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: one GPU per rank)")
    a.add_argument("--out", required=True, help="output folder (units/ and results.json)")
    args = parser.parse_args(argv)
    if args.command == "analyze":
        analyze(parser, args)
        return
    if args.k < 1 or args.columns < 2:
        parser.error("--k must be ≥ 1 and --columns ≥ 2")
    directions(args)


def analyze(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from labkit.analysis import Job, run

    if args.samples < 1:
        parser.error(f"analyze: --samples must be ≥ 1, got {args.samples}")
    if not 1 <= args.k <= 50:
        parser.error(f"analyze: --k must be in 1..50, got {args.k}")
    if not all(0.0 < t <= 1.0 for t in args.t) or len(set(args.t)) != len(args.t):
        parser.error(f"analyze: --t must be distinct fractions of T in (0, 1], got {args.t}")
    if not args.tol > 0 or args.steps < 1:
        parser.error(f"analyze: --tol must be > 0 and --steps ≥ 1, got --tol {args.tol} --steps {args.steps}")
    path = run(Job(args.model, args.samples, tuple(args.t), args.k, Path(args.out), args.steps, args.tol, args.device))
    if path is not None:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
