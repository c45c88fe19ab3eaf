"""Benchmark: the local basis of h-space, new methods against the reference power method and scipy.

    python benchmarks/local_basis.py                      # embedded model, k = 2, 8, 50, and the sweep
    python benchmarks/local_basis.py --scale              # + CIFAR-10-32 / CelebA-256 per-product costs
    python benchmarks/local_basis.py --device cuda --scale --scale-basis --scale-k 10

The sweep (k = 8, tol 1e-3 … 1e-7) runs labkit's default against scipy's ``svds`` (ARPACK,
PROPACK, LOBPCG) on one ``LinearOperator`` whose matvec is one J·v (computed the way labkit
computes it on this device) and whose rmatvec is one VJP through a recorded pull-back, float64
on scipy's side; LOBPCG is stopped after --cap seconds. Every row's residual
‖JᵀJv − σ²v‖/σ² is recomputed the same way (float32 products of the returned v, float64 after).

Side by side in one run, same model, same sample, same seed, same stopping certificate
(every top-k residual ‖JᵀJ v − σ² v‖/σ² ≤ --tol): products (JVP + VJP), wall time, and
accuracy against the exact SVD of the explicit Jacobian (largest principal angle, worst σ
relative error). Also the two user-facing timings: a top-8 basis, and an edit strip of 9
strengths. Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel
from scipy.sparse.linalg import LinearOperator, svds

from labkit.checks import check_out_dir, device_arg, float_arg, int_arg
from labkit.diffusion import h_space, sample_at, sample_noise, timestep_at
from labkit.editing import edit
from labkit.files import write_json
from labkit.models import ARCHITECTURES, DiffusionModel, from_unet, load_model, set_fp32_precision
from labkit.spectral import jvps, local_basis, principal_angles, vjps


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


class TimeCap(Exception):
    """Raised inside scipy's iteration when a solver has used up its time."""


def scipy_operator(f, x: torch.Tensor, cap: float, mode: str):
    """J as a float64 scipy LinearOperator: matvec one J·v (mode "forward" or "double-vjp"), rmatvec
    one VJP. Counts products; raises TimeCap once ``cap`` seconds have passed since creation."""
    y, pull_back = torch.func.vjp(f, x)
    _, push_forward = torch.func.vjp(lambda u: pull_back(u)[0], torch.zeros_like(y))
    count = {"products": 0}
    deadline = time.perf_counter() + cap

    def tick():
        count["products"] += 1
        if time.perf_counter() > deadline:
            raise TimeCap

    def to_torch(a: np.ndarray, shape) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(x.device, x.dtype).reshape(shape)

    def matvec(v):
        tick()
        if mode == "forward":
            out = torch.func.jvp(f, (x,), (to_torch(v, x.shape),))[1]
        else:
            out = push_forward(to_torch(v, x.shape))[0]
        return out.detach().double().cpu().numpy().ravel()

    def rmatvec(u):
        tick()
        return pull_back(to_torch(u, y.shape))[0].detach().double().cpu().numpy().ravel()

    return LinearOperator((y.numel(), x.numel()), matvec=matvec, rmatvec=rmatvec, dtype=np.float64), count


def checked_residual(f, x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> float:
    """max_i ‖JᵀJ v_i − σ_i² v_i‖/σ_i², products in the model's dtype, the rest in float64."""
    V = v.reshape(len(sigma), *x.shape).to(x.dtype)
    W = vjps(f, x, jvps(f, x, V)).reshape(len(sigma), -1).double()
    s2 = sigma.double().cpu() ** 2
    return ((W.cpu() - s2[:, None] * v.reshape(len(sigma), -1).double().cpu()).norm(dim=1) / s2).max().item()


def sweep(model: DiffusionModel, k: int, tols: list[float], cap: float) -> list[dict]:
    """labkit against scipy's solvers on the same operator, at each tolerance."""
    t = timestep_at(model, 0.6)
    f, x = h_space(model, t), sample_at(model, seed=0, t=t).x_t
    local_basis(f, x, 2)  # warm-up
    rows = []
    for tol in tols:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            basis, seconds = timed(lambda: local_basis(f, x, k, tol=tol))
        rows.append(dict(tol=tol, method="labkit", products=basis.n_jvp + basis.n_vjp, seconds=round(seconds, 3),
                         residual=checked_residual(f, x, basis.v, basis.sigma), warned=bool(caught)))
        # The strongest peer gets labkit's J·v for this device; the issue's peer (ARPACK with
        # matvec = one forward-mode JVP) is the last row.
        fast = "double-vjp" if x.device.type == "cpu" else "forward"
        for solver, mode in (("arpack", fast), ("propack", fast), ("lobpcg", fast), ("arpack", "forward")):
            A, count = scipy_operator(f, x, cap, mode)
            name = f"scipy {solver} ({mode})"
            start = time.perf_counter()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    # ARPACK's tol bounds the error of σ² relative to σ² (eigsh on AᵀA), the same scale
                    # as labkit's certificate; LOBPCG's is squared inside svds.
                    _, S, Vt = svds(A, k=k, tol=tol, solver=solver, random_state=0,
                                    **({"maxiter": 1000} if solver == "lobpcg" else {}))
                seconds = time.perf_counter() - start
                order = np.argsort(S)[::-1]
                v, sigma = torch.from_numpy(Vt[order].copy()), torch.from_numpy(S[order].copy())
                rows.append(dict(tol=tol, method=name, products=count["products"],
                                 seconds=round(seconds, 3), residual=checked_residual(f, x, v, sigma),
                                 warned=bool(caught)))
            except TimeCap:
                rows.append(dict(tol=tol, method=name, products=count["products"],
                                 seconds=round(time.perf_counter() - start, 3), residual=None, warned=True,
                                 note=f"stopped at the {cap:g} s cap"))
            except (ArithmeticError, ValueError, np.linalg.LinAlgError) as err:  # e.g. PROPACK: "did not converge"
                rows.append(dict(tol=tol, method=name, products=count["products"],
                                 seconds=round(time.perf_counter() - start, 3), residual=None, warned=True,
                                 note=f"failed: {str(err).splitlines()[0][:60]}"))
        print_table(rows[-5:], ["tol", "method", "products", "seconds", "residual", "warned", "note"])
    for tol in tols:
        ours = next(r for r in rows if r["tol"] == tol and r["method"] == "labkit")
        finished = [r for r in rows if r["tol"] == tol and r["method"] != "labkit" and r["residual"] is not None]
        best = min(finished, key=lambda r: r["seconds"], default=None)
        if best is not None:
            ours["best_scipy"] = best["method"]
            ours["time_ratio_vs_best_scipy"] = round(best["seconds"] / ours["seconds"], 2)
            arpack = next((r for r in finished if r["method"] == f"scipy arpack ({fast})"), None)
            if arpack is not None:
                ours["products_vs_arpack"] = f"{ours['products']} vs {arpack['products']}"
            issue_peer = next((r for r in finished if r["method"] == "scipy arpack (forward)"), None)
            if issue_peer is not None:
                ours["time_ratio_vs_arpack_forward"] = round(issue_peer["seconds"] / ours["seconds"], 2)
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
    if repeats == 1:
        return timed(fn)[1]  # large models: one call, no separate warm-up (the forward pass warmed up)
    fn()  # warm-up: the first call sets up torch.func transforms and allocator caches
    return statistics.median(timed(fn)[1] for _ in range(repeats))


def scale(device: str, k: int, tol: float, with_basis: bool) -> list[dict]:
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
        repeats = 3 if x.numel() < 100_000 else 1  # CelebA: one call each, or it takes many minutes on a CPU
        fwd = median_seconds(lambda: f(x), 3)
        jvp = median_seconds(lambda: torch.func.jvp(f, (x,), (v,)), repeats)
        h, pull = torch.func.vjp(f, x)
        vjp = median_seconds(lambda: pull(torch.ones_like(h)), repeats)
        # J·v by the transpose trick: the VJP of u ↦ Jᵀu, recorded once like the pull-back
        _, push = torch.func.vjp(lambda u: pull(u)[0], torch.zeros_like(h))
        dvjp = median_seconds(lambda: push(v), repeats)
        row = dict(model=name, n=x.numel(), m=h.numel(), h_forward_s=round(fwd, 4),
                   jvp_over_forward=round(jvp / fwd, 2),
                   double_vjp_over_forward=round(dvjp / fwd, 2), vjp_over_forward=round(vjp / fwd, 2))
        if not with_basis:
            rows.append(row)
            print_table(rows[-1:], list(rows[-1]))
            continue
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        basis, basis_s = timed(lambda: local_basis(f, x, k, tol=tol, max_iter=30))
        memory = (torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda")
                  else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        products = basis.n_jvp + basis.n_vjp
        rows.append(dict(**row, k=k, basis_seconds=round(basis_s, 2), products=products,
                         product_over_forward=round(basis_s / products / fwd, 2),
                         residual=basis.residual.max().item(), peak_memory_gib=round(memory, 2)))
        print_table(rows[-1:], list(rows[-1]))
    return rows


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(f"{r.get(c, '')}".ljust(w) for c, w in zip(columns, widths)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # k ≤ 784: the embedded model's x has 784 numbers (h has 3,136), so it has at most 784 directions
    parser.add_argument("--ks", type=int_arg(1, 784), nargs="*", default=[2, 8, 50],
                        help="k of the method comparison (none: skip)")
    tolerance = float_arg(0.0, 1.0, low_open=True, high_open=True)
    parser.add_argument("--tol", type=tolerance, default=1e-3)
    parser.add_argument("--max-sweeps", type=int_arg(1, 100_000), default=300, help="cap for the power methods")
    parser.add_argument("--scale", action="store_true", help="also time the hub architectures (random weights)")
    parser.add_argument("--scale-k", type=int_arg(1, 64), default=10)
    parser.add_argument("--scale-basis", action="store_true", help="with --scale: also a k-basis per architecture")
    parser.add_argument("--sweep-k", type=int_arg(1, 784), default=8, help="k of the tolerance sweep against scipy")
    parser.add_argument("--tols", type=tolerance, nargs="*", default=[1e-3, 1e-4, 1e-5, 1e-6, 1e-7],
                        help="tolerances of the sweep (none: skip it)")
    parser.add_argument("--skip-user", action="store_true", help="skip the top-8 basis and edit strip timings")
    parser.add_argument("--cap", type=float_arg(0.0, 86_400.0, low_open=True), default=120.0,
                        help="seconds before a scipy solver is stopped")
    parser.add_argument("--device", type=device_arg, default="cpu")
    parser.add_argument("--out", default="benchmarks/results/local_basis.json")
    args = parser.parse_args(argv)
    args.device = str(args.device)
    try:  # the report's folder, before any work
        check_out_dir("--out", Path(args.out).parent)
    except (TypeError, PermissionError) as err:
        parser.error(f"argument --out: {err}")

    # True float32 on a GPU too (no TF32), as in the reference code.
    set_fp32_precision(torch.device(args.device), tf32=False)
    model = load_model(device=args.device)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    report = {"machine": device_name or platform.machine(), "threads": torch.get_num_threads(),
              "device": args.device, "torch": torch.__version__, "tol": args.tol, "fp32_precision": "ieee",
              "date": time.strftime("%Y-%m-%d"), "load_average_before": round(os.getloadavg()[0], 2)}
    if args.tols:
        report["sweep"] = sweep(model, args.sweep_k, args.tols, args.cap)
        print_table(report["sweep"], ["tol", "method", "products", "seconds", "residual", "warned", "note",
                                      "best_scipy", "time_ratio_vs_best_scipy", "products_vs_arpack",
                                      "time_ratio_vs_arpack_forward"])
    if args.ks:
        report["methods"] = compare_methods(model, args.ks, args.tol, args.max_sweeps)
        print_table(report["methods"], ["k", "method", "products", "iterations", "seconds", "residual", "max_angle",
                                        "sigma_rel_err", "product_ratio_vs_reference", "time_ratio_vs_reference"])
    if not args.skip_user:
        report["user"] = user_timings(model)
        print(report["user"])
    if args.scale:
        report["scale"] = scale(args.device, args.scale_k, args.tol, args.scale_basis)
        print_table(report["scale"], list(report["scale"][0]))
    # other work on the machine slows every timing alike; the load average says whether there was any
    report["load_average_after"] = round(os.getloadavg()[0], 2)
    print(f"wrote {write_json(args.out, report)}")


if __name__ == "__main__":
    main()
