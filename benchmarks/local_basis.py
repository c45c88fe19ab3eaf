"""Benchmark: the local basis of h-space, new methods against the reference power method.

    python benchmarks/local_basis.py                      # embedded model, k = 2, 8, 50
    python benchmarks/local_basis.py --scale              # + CIFAR-10-32 / CelebA-256 architectures
    python benchmarks/local_basis.py --device cuda --scale --scale-k 10

Side by side in one run, same model, same sample, same seed, same stopping certificate
(every top-k residual ‖JᵀJ v − σ² v‖/σ² ≤ --tol): products (JVP + VJP), wall time, and
accuracy against the exact SVD of the explicit Jacobian (largest principal angle, worst σ
relative error). Also the two user-facing timings: a top-8 basis, and an edit strip of 9
strengths. Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from diffusers import UNet2DModel

from labkit.diffusion import h_space, sample_at, sample_noise, timestep_at
from labkit.editing import edit
from labkit.models import ARCHITECTURES, DiffusionModel, from_unet, load_model, set_fp32_precision
from labkit.spectral import local_basis, principal_angles


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def compare_methods(model: DiffusionModel, ks: list[int], tol: float, max_sweeps: int) -> list[dict]:
    t = timestep_at(model, 0.6)
    sample = sample_at(model, seed=0, t=t)
    f, x = h_space(model, t), sample.x_t
    exact, exact_s = timed(lambda: local_basis(f, x, max(ks), method="exact"))
    rows = []
    for k in ks:
        # "krylov (block 1)" is Golub–Kahan–Lanczos: the fewest products, in many small batches.
        variants = {"reference": dict(max_iter=max_sweeps), "power": dict(max_iter=max_sweeps), "krylov": {},
                    "krylov (block 1)": dict(block=1, max_iter=10 * k)}
        for name, options in variants.items():
            method = name.split()[0]
            basis, seconds = timed(lambda: local_basis(f, x, k, method=method, tol=tol, **options))
            angle = principal_angles(basis.v, exact.v[:k]).max().item()
            sigma_err = ((basis.sigma - exact.sigma[:k]).abs() / exact.sigma[:k]).max().item()
            rows.append(dict(k=k, method=name, products=basis.n_jvp + basis.n_vjp, jvp=basis.n_jvp, vjp=basis.n_vjp,
                             iterations=basis.iterations, seconds=round(seconds, 3),
                             residual=basis.residual.max().item(), max_angle=angle, sigma_rel_err=sigma_err))
    for k in ks:
        base = next(r for r in rows if r["k"] == k and r["method"] == "reference")
        for r in rows:
            if r["k"] == k:
                r["product_ratio_vs_reference"] = round(base["products"] / r["products"], 2)
                r["time_ratio_vs_reference"] = round(base["seconds"] / r["seconds"], 2)
    print(f"exact SVD of the explicit {h_space(model, t)(x).numel()}×{x.numel()} Jacobian: {exact_s:.2f} s")
    return rows


def user_timings(model: DiffusionModel) -> dict:
    t = timestep_at(model, 0.6)
    sample = sample_at(model, seed=1, t=t)
    f = h_space(model, t)
    local_basis(f, sample.x_t, 2)  # warm-up
    basis, basis_s = timed(lambda: local_basis(f, sample.x_t, 8, tol=1e-3))
    strengths = torch.linspace(-1, 1, 9)
    edit(model, sample, basis.v[0], strengths[:2])  # warm-up
    _, strip_s = timed(lambda: edit(model, sample, basis.v[0], strengths))
    return {"top8_basis_seconds": round(basis_s, 3), "top8_products": basis.n_jvp + basis.n_vjp,
            "edit_strip_9_seconds": round(strip_s, 3)}


def median_seconds(fn, repeats: int = 3) -> float:
    fn()  # warm-up: the first call sets up torch.func transforms and allocator caches
    return statistics.median(timed(fn)[1] for _ in range(repeats))


def scale(device: str, k: int, tol: float) -> list[dict]:
    """Per-product cost and a k-basis on the hub architectures, random weights.

    A JVP includes its own forward pass (forward mode carries the primal along); a VJP reuses one
    recorded forward pass, as local_basis does for all of its VJPs, so its time is the backward
    pass alone. Memory is the GPU's peak allocation during the basis, or on the CPU the process's
    peak resident size so far (models run smallest first).
    """
    rows = []
    for name, config in ARCHITECTURES.items():
        torch.manual_seed(0)
        model = from_unet(UNet2DModel(**config).to(device), name=name)
        f, x = h_space(model, 600), sample_noise(model, 1, seed=0)
        v = torch.randn_like(x)
        fwd = median_seconds(lambda: f(x))
        jvp = median_seconds(lambda: torch.func.jvp(f, (x,), (v,)))
        h, pull = torch.func.vjp(f, x)
        vjp = median_seconds(lambda: pull(torch.ones_like(h)))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        basis, basis_s = timed(lambda: local_basis(f, x, k, tol=tol, max_iter=30))
        memory = (torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda")
                  else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        products = basis.n_jvp + basis.n_vjp
        rows.append(dict(model=name, n=x.numel(), m=h.numel(), h_forward_s=round(fwd, 4),
                         jvp_over_forward=round(jvp / fwd, 2), vjp_over_forward=round(vjp / fwd, 2), k=k,
                         basis_seconds=round(basis_s, 2), products=products,
                         product_over_forward=round(basis_s / products / fwd, 2),
                         residual=basis.residual.max().item(), peak_memory_gib=round(memory, 2)))
        print_table(rows[-1:], list(rows[-1]))
    return rows


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(f"{r.get(c, '')}".ljust(w) for c, w in zip(columns, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 8, 50])
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--max-sweeps", type=int, default=300, help="cap for the power methods")
    parser.add_argument("--scale", action="store_true", help="also time the hub architectures (random weights)")
    parser.add_argument("--scale-k", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/local_basis.json")
    args = parser.parse_args()

    # True float32 on a GPU too (no TF32), as in the reference code.
    set_fp32_precision(torch.device(args.device), tf32=False)
    model = load_model(device=args.device)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    report = {"machine": device_name or platform.machine(), "threads": torch.get_num_threads(),
              "device": args.device, "torch": torch.__version__, "tol": args.tol, "fp32_precision": "ieee"}
    report["methods"] = compare_methods(model, args.ks, args.tol, args.max_sweeps)
    print_table(report["methods"], ["k", "method", "products", "iterations", "seconds", "residual", "max_angle",
                                    "sigma_rel_err", "product_ratio_vs_reference", "time_ratio_vs_reference"])
    report["user"] = user_timings(model)
    print(report["user"])
    if args.scale:
        report["scale"] = scale(args.device, args.scale_k, args.tol)
        print_table(report["scale"], list(report["scale"][0]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
