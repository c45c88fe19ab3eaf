"""The local basis: the top singular triplets of a Jacobian, without ever building the Jacobian.

For a differentiable map f: X → H (later: noisy latent x_t → U-Net bottleneck h_t) the
Jacobian J = ∂f/∂x at x is a linear map from the tangent space T_x X (n = x.numel()
coordinates) to T_h H (m = f(x).numel() coordinates). Its singular value decomposition

    J = U Σ Vᵀ,    J v_i = σ_i u_i,    Jᵀ J = V Σ² Vᵀ

gives the *local basis*: v_1 is the unit direction in X that moves h furthest, v_2 the furthest
one orthogonal to v_1, and so on. For a U-Net J has millions of entries, so we only ever touch
it through two products that automatic differentiation makes cheap:

- a JVP (Jacobian-vector product, forward mode)  v ↦ J v,   one costs about one forward pass;
- a VJP (vector-Jacobian product, reverse mode)  u ↦ Jᵀ u,  one costs about one backward pass.

Four methods, all returning the same `LocalBasis`:

- ``"exact"``   the full Jacobian (``torch.func.jacfwd`` or ``jacrev``) and ``torch.linalg.svd``;
  the reference, for small maps only.
- ``"power"``   block subspace iteration on JᵀJ with block size k (the method of
  Park et al. 2023, ``labkit.power``): Q ← orth(Jᵀ(J Q)) until converged, then Rayleigh–Ritz.
- ``"reference"`` a faithful port of the reference implementation's power method, kept to
  measure against (``labkit.power``): the same iteration as "power", one unbatched product at a
  time, stopping on the same residual certificate as the others.
- ``"krylov"``  thick-restart block Lanczos on JᵀJ with deflation (``labkit.krylov``): far
  fewer products when the singular values are close together, float64 linear algebra around
  the model's own-precision products, so a float32 model reaches residuals near 1e-7.

J v comes either from forward mode (``torch.func.jvp``) or from two reverse passes (the
transpose trick, ``jvps(..., mode="double-vjp")``); ``local_basis`` picks per device.

Every result carries a certificate, the relative residual ‖JᵀJ v_i − σ_i² v_i‖ / σ_i², which is
zero exactly when v_i is a right singular vector.

Explained in: book/part1-geometry/05_svd.ipynb (JVPs and VJPs: book/part1-geometry/03_jacobians.ipynb)
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from labkit.checks import check_bool, check_callable, check_choice, check_float, check_int, check_tensor, show
from labkit.krylov import block_lanczos, orthonormal_rows, relative_residual
from labkit.power import block_power, reference_power

Map = Callable[[Tensor], Tensor]

METHODS = ("exact", "power", "krylov", "reference")
# Above this many Jacobian entries (200 MB in float32) "exact" refuses and points to "krylov".
EXACT_MAX_ENTRIES = 50_000_000
DEFAULT_MAX_ITER = {"power": 500, "krylov": 50, "reference": 500}
JVP_MODES = ("auto", "forward", "double-vjp")
# The options of local_basis that a method does not read: a value other than the default is
# refused rather than ignored. (progress only draws a bar; "exact" meets any tol, max_iter and
# seed, so every method accepts those.)
UNUSED_OPTIONS = {"exact": ("oversample", "block", "max_dim", "jvp_mode"),
                  "power": ("oversample", "block", "max_dim"),
                  "reference": ("oversample", "block", "max_dim", "jvp_mode", "chunk_size"),
                  "krylov": ()}


@dataclass(frozen=True)
class LocalBasis:
    """The top-k singular triplets of J = ∂f/∂x at x, with J v_i = sigma_i u_i."""

    v: Tensor  # (k, *x.shape)  right singular vectors: unit directions in X
    sigma: Tensor  # (k,)  singular values, descending
    u: Tensor  # (k, *y.shape)  left singular vectors: unit directions in H
    residual: Tensor  # (k,)  ‖JᵀJ v_i − sigma_i² v_i‖ / sigma_i², the certificate
    n_jvp: int  # Jacobian-vector products used (J v)
    n_vjp: int  # vector-Jacobian products used (Jᵀ u)
    method: str
    iterations: int  # blocks (krylov) or sweeps (power); 1 for exact


def jvps(f: Map, x: Tensor, V: Tensor, *, chunk_size: int | None = None, mode: str = "forward") -> Tensor:
    """J v for each row v of V.  V: (b, *x.shape) → (b, *f(x).shape).

    mode="forward": one ``torch.func.jvp`` (forward mode), vectorised over the tangents with
    ``torch.func.vmap``. Only the tangents are batched, not the primal x, so f(x) itself is
    evaluated once per call.
    mode="double-vjp": the transpose trick. u ↦ Jᵀu is linear, so its own VJP with cotangent v
    is (Jᵀ)ᵀ v = J v: two reverse passes instead of one forward-mode pass, which on a CPU is
    2-3× cheaper for a U-Net (forward-mode kernels are slower there; see ``JVP_MODES``).
    ``chunk_size`` (passed to vmap) pushes that many tangents at a time, to bound memory.

    Explained in: book/part1-geometry/03_jacobians.ipynb
    """
    _check_tangents(V, x, "V", "x")
    if mode not in ("forward", "double-vjp"):
        raise ValueError(f"mode must be 'forward' or 'double-vjp', got {mode!r}")
    if mode == "double-vjp":
        y, pull_back = torch.func.vjp(f, x)
        return torch.func.vmap(_push_forward_by_double_vjp(pull_back, y), chunk_size=chunk_size)(V)

    def push_forward(v: Tensor) -> Tensor:
        return torch.func.jvp(f, (x,), (v,))[1]

    return torch.func.vmap(push_forward, chunk_size=chunk_size)(V)


def vjps(f: Map, x: Tensor, U: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Reverse mode: Jᵀ u for each row u of U.  U: (b, *f(x).shape) → (b, *x.shape).

    One forward pass records the graph (``torch.func.vjp``); the backward pass is vectorised
    over the cotangents with ``torch.func.vmap`` (``chunk_size`` at a time, to bound memory).

    Explained in: book/part1-geometry/03_jacobians.ipynb
    """
    y, pull_back = torch.func.vjp(f, x)
    _check_tangents(U, y, "U", "f(x)")
    return _pull_back_rows(pull_back, U, chunk_size)


def local_basis(
    f: Map,
    x: Tensor,
    k: int,
    method: str = "krylov",
    *,
    tol: float = 1e-4,
    max_iter: int | None = None,
    oversample: int = 2,
    block: int | None = None,
    max_dim: int | None = None,
    jvp_mode: str = "auto",
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = False,
) -> LocalBasis:
    """The top-k right singular vectors v_i, singular values σ_i and left singular vectors u_i
    of J = ∂f/∂x at x, found from JVPs and VJPs alone (except for method="exact").

    v_1 = argmax_{‖v‖=1} ‖J v‖² = argmax vᵀ JᵀJ v: the most sensitive direction in X for the
    pulled-back metric JᵀJ; v_i maximises the same under orthogonality to v_1 … v_{i-1}.

    f: any differentiable torch function from a tensor to a tensor; x keeps its batch
    dimension (e.g. (1, 1, 28, 28)) and the returned v has shape (k, *x.shape), u has shape
    (k, *f(x).shape). Works in x's dtype (float32 or float64) and on x's device.

    method: "krylov" (default), "power", "exact" or "reference", see the module docstring. An
      option that the method does not read (UNUSED_OPTIONS, e.g. jvp_mode for "exact") must keep
      its default: another value is refused, not ignored.
    tol: stop when every one of the top-k residuals ‖JᵀJ v_i − σ_i² v_i‖ / σ_i² is ≤ tol.
      Every iterative method uses this same certificate, so their product counts compare.
      "krylov" reaches about 1e-7 with a float32 model (its linear algebra runs in float64).
    max_iter: most blocks (krylov, default 50) or sweeps (power, reference: 500); a warning says
      so if tol was not reached.
    oversample, block: krylov's largest block is p = ``block`` if given, else
      min(k + oversample, max(2, ⌈k/3⌉)) (larger blocks batch better but need more products in
      all; this one needs no more than ARPACK's single-vector Lanczos); the block shrinks as the
      top vectors converge, never below (unconverged among the top k) + oversample. A block
      smaller than k is allowed: block=1 is Golub–Kahan–Lanczos, the fewest products, but in more and smaller sequential
      batches (slower on most hardware), and a singular value repeated more than ``block``
      times is then found only by rounding error.
    max_dim: krylov keeps at most this many basis vectors (default max(10(k + oversample), 20p)),
      then restarts from its leading Ritz vectors (thick restart); bounds memory at about
      max_dim (2n + m) float64 numbers. Restarts cost products: with deflation the kept Ritz
      vectors no longer span a Krylov space, so convergence after one is slower.
    jvp_mode: how J v is computed: "forward" (torch.func.jvp), "double-vjp" (the transpose
      trick, see ``jvps``) or "auto": "double-vjp" on a CPU, where it measured faster on every
      architecture we tried (benchmarks/README.md), "forward" elsewhere.
    seed: the random start block comes from its own torch.Generator: same seed, same output.
    chunk_size: tangents pushed through f at a time (vmap chunk_size), to bound memory.
    progress: a tqdm bar over the iterations, showing the largest residual.

    Signs: each v_i is flipped so that its largest-magnitude entry is positive, and u_i is
    flipped with it so J v_i = σ_i u_i still holds.

    Explained in: book/part1-geometry/05_svd.ipynb
    """
    options = dict(tol=tol, max_iter=max_iter, oversample=oversample, block=block, max_dim=max_dim,
                   jvp_mode=jvp_mode, seed=seed, chunk_size=chunk_size, progress=progress)
    y = _check_local_basis(f, x, k, method, options)
    if method == "exact":
        return _exact(f, x, y, k, chunk_size)
    if method == "reference":
        v, sigma, u, residual, sweeps = reference_power(f, x, y, k, tol, max_iter or DEFAULT_MAX_ITER["reference"],
                                                        seed, progress)
        return _finish(v, sigma, u, residual, x=x, y=y, n_jvp=sweeps * k, n_vjp=sweeps * k, method="reference",
                       iterations=sweeps)
    return _iterate(f, x, y, k, method, **options)


def _check_local_basis(f: Map, x: Tensor, k: int, method: str, options: dict) -> Tensor:
    """Every check of local_basis, before any product; returns y = f(x)."""
    check_choice("method", method, METHODS)
    defaults = {name: p.default for name, p in inspect.signature(local_basis).parameters.items() if name in options}
    unused = [name for name in UNUSED_OPTIONS[method] if options[name] != defaults[name]]
    if unused:
        raise ValueError(f"method={method!r} does not use {', '.join(f'{n}={options[n]!r}' for n in unused)}; "
                         f"leave {'it' if len(unused) == 1 else 'them'} out, or pick a method that uses "
                         f"{'it' if len(unused) == 1 else 'them'} (see local_basis's docstring)")
    y = _check_map_and_point(f, x)
    n, m = x.numel(), y.numel()
    check_int("k", k, 1, min(n, m), hint=f"at most min(n, m) = min(x.numel(), f(x).numel()) = min({n}, {m})")
    check_float("tol", options["tol"], 0.0, 1.0, low_open=True, high_open=True,
                hint="the largest relative residual accepted, e.g. 1e-4")
    if options["max_iter"] is not None:
        check_int("max_iter", options["max_iter"], 1, 1_000_000)
    check_int("oversample", options["oversample"], 0, n)
    if options["block"] is not None:
        check_int("block", options["block"], 1, n)
    if options["max_dim"] is not None:
        check_int("max_dim", options["max_dim"], 1)
    check_choice("jvp_mode", options["jvp_mode"], JVP_MODES)
    check_int("seed", options["seed"], 0, 2**63 - 1)
    if options["chunk_size"] is not None:
        check_int("chunk_size", options["chunk_size"], 1)
    check_bool("progress", options["progress"])
    if method == "krylov":
        p, max_dim = _krylov_sizes(k, options["oversample"], options["block"], options["max_dim"])
        if max_dim < k + options["oversample"] + 2 * p:
            raise ValueError(f"max_dim must be at least k + oversample + 2·block = {k + options['oversample'] + 2 * p}"
                             f", got {max_dim}; raise it or lower block")
    return y


def _krylov_sizes(k: int, oversample: int, block: int | None, max_dim: int | None) -> tuple[int, int]:
    """Krylov's largest block p and most basis rows kept (the defaults of local_basis's docstring)."""
    p = min(k + oversample, max(2, -(-k // 3))) if block is None else block
    return p, max(10 * (k + oversample), 20 * p) if max_dim is None else max_dim


def _iterate(f: Map, x: Tensor, y: Tensor, k: int, method: str, *, tol: float, max_iter: int | None,
             oversample: int, block: int | None, max_dim: int | None, jvp_mode: str, seed: int,
             chunk_size: int | None, progress: bool) -> LocalBasis:
    """The iterative methods, "power" and "krylov", on checked input."""
    n, m = x.numel(), y.numel()
    if jvp_mode == "auto":
        jvp_mode = "double-vjp" if x.device.type == "cpu" else "forward"
    max_iter = DEFAULT_MAX_ITER[method] if max_iter is None else max_iter
    p, max_dim = (k, None) if method == "power" else _krylov_sizes(k, oversample, block, max_dim)
    p = min(p, n)

    # Random orthonormal start block, rows are directions in X. Drawn on the CPU so the same
    # seed gives the same start on any device.
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(p, n, generator=generator, dtype=x.dtype).to(x.device)

    # J and Jᵀ as functions of row blocks (b, n) → (b, m) and (b, m) → (b, n). The forward
    # pass for Jᵀ is recorded once and reused by every VJP (and, for double-vjp, every JVP).
    _, pull_back = torch.func.vjp(f, x)
    push_forward = _push_forward_by_double_vjp(pull_back, y) if jvp_mode == "double-vjp" else None

    def J(rows: Tensor) -> Tensor:
        rows = rows.reshape(-1, *x.shape)
        if push_forward is None:
            return jvps(f, x, rows, chunk_size=chunk_size).reshape(len(rows), m)
        return torch.func.vmap(push_forward, chunk_size=chunk_size)(rows).reshape(len(rows), m)

    def Jt(rows: Tensor) -> Tensor:
        return _pull_back_rows(pull_back, rows.reshape(-1, *y.shape), chunk_size).reshape(len(rows), n)

    stalled = False
    if method == "power":
        v, sigma, u, residual, iterations = block_power(J, Jt, orthonormal_rows(start), k, tol, max_iter, progress)
        n_products = iterations * p
    else:
        v, sigma, u, residual, n_products, iterations, stalled = block_lanczos(
            J, Jt, start, k, tol=tol, max_iter=max_iter, max_dim=max_dim, oversample=oversample, dtype=x.dtype,
            progress=progress)
        v, sigma, u, residual = (t.to(x.dtype) for t in (v, sigma, u, residual))
    if residual.max() > tol:
        warnings.warn(
            f"local_basis(method={method!r}) stopped after {iterations} iterations with largest "
            f"residual {residual.max().item():.2e} > tol = {tol:g}; "
            + ("the residual stopped falling at the rounding level of the model's products "
               f"({x.dtype}): raise tol, or use a float64 model for a smaller residual" if stalled else
               "raise max_iter" + (" or use method='krylov'" if method == "power" else " or oversample")),
            RuntimeWarning,
            stacklevel=3,
        )
    return _finish(v, sigma, u, residual, x=x, y=y, n_jvp=n_products, n_vjp=n_products, method=method,
                   iterations=iterations)


def principal_angles(A: Tensor, B: Tensor) -> Tensor:
    """Principal angles (radians, ascending) between the spans of the rows of A and of B.

    A: (k, *shape), B: (l, *shape), rows need not be orthonormal. Returns min(k, l) angles
    θ_1 ≤ θ_2 ≤ …, where cos θ_i are the singular values of Q_Aᵀ Q_B for orthonormal bases
    Q_A, Q_B. They depend only on the two subspaces: not on signs, order or rotations of
    the rows. Small angles come from sines, large ones from cosines, for accuracy (Björck &
    Golub); computed in float64.

    Explained in: book/part1-geometry/05_svd.ipynb
    """
    check_tensor("A", A, hint="rows are vectors: (k, *shape)")
    check_tensor("B", B, hint="rows are vectors: (l, *shape)")
    if A.ndim == 0 or B.ndim == 0 or 0 in (len(A), len(B)):
        raise ValueError(f"A and B must each hold at least one row, got shapes {tuple(A.shape)} and {tuple(B.shape)}")
    if A.shape[1:] != B.shape[1:]:
        raise ValueError(f"rows of A and B must have the same shape, got {tuple(A.shape[1:])} and {tuple(B.shape[1:])}")
    QA = orthonormal_rows(A.reshape(len(A), -1).double())
    QB = orthonormal_rows(B.reshape(len(B), -1).double().to(A.device))
    if len(QA) < len(QB):
        QA, QB = QB, QA  # angles are symmetric; let B be the smaller subspace
    C = QB @ QA.T  # (l, k)
    cos = torch.linalg.svdvals(C).clamp(0.0, 1.0)  # descending → angles ascending
    sin = torch.linalg.svdvals(QB - C @ QA).clamp(0.0, 1.0).flip(0)  # ascending
    return torch.where(cos**2 > 0.5, torch.arcsin(sin), torch.arccos(cos))


def subspace_distance(A: Tensor, B: Tensor) -> Tensor:
    """Geodesic distance on the Grassmann manifold between span(rows of A) and span(rows of B):
    ‖θ‖₂, the norm of the principal angles. Zero iff the subspaces agree (for equal k),
    whatever the signs and order of the basis vectors.

    Explained in: book/part1-geometry/05_svd.ipynb
    """
    return torch.linalg.vector_norm(principal_angles(A, B))


# ---------------------------------------------------------------------------------------------
# The exact method (power and krylov: _iterate above; reference: labkit.power)


def _exact(f: Map, x: Tensor, y: Tensor, k: int, chunk_size: int | None) -> LocalBasis:
    """Full Jacobian and SVD. jacfwd costs n JVPs, jacrev m VJPs: take the cheaper."""
    n, m = x.numel(), y.numel()
    if n * m > EXACT_MAX_ENTRIES:
        raise ValueError(
            f"method='exact' would build a {m}×{n} Jacobian ({n * m:,} entries); "
            "use method='krylov', which needs only JVPs and VJPs."
        )
    forward = n <= m
    if forward:
        Jmat = torch.func.jacfwd(f)(x).reshape(m, n)
    else:
        Jmat = torch.func.jacrev(f, chunk_size=chunk_size)(x).reshape(m, n)
    U, S, Vh = torch.linalg.svd(Jmat, full_matrices=False)
    v, sigma, u = Vh[:k], S[:k], U[:, :k].T
    residual = relative_residual(v @ Jmat.T @ Jmat, v, sigma)
    return _finish(v, sigma, u, residual, x=x, y=y, n_jvp=n if forward else 0, n_vjp=0 if forward else m,
                   method="exact", iterations=1)


def _finish(v: Tensor, sigma: Tensor, u: Tensor, residual: Tensor, *, x: Tensor, y: Tensor, n_jvp: int, n_vjp: int,
            method: str, iterations: int) -> LocalBasis:
    """Fix signs (largest-|.| entry of v_i positive, u_i flipped with it) and restore shapes.

    Refuses J = 0 (every product exactly zero): σ = 0 with residual 0 would read as converged."""
    if not bool(sigma[0] > 0):
        raise ValueError("f does not vary with x here: J = ∂f/∂x is exactly zero at x, so there are no singular "
                         "directions. f may be piecewise constant (round, floor, argmax, a threshold) or detach x "
                         "inside; local_basis needs a map differentiable in x")
    zero = torch.finfo(sigma.dtype).eps * max(x.numel(), y.numel()) * sigma[0]  # numerical rank, as in matrix_rank
    if not bool(sigma[-1] > zero):
        warnings.warn(f"J has rank {int((sigma > zero).sum())} < k = {len(sigma)} at x: the directions with σ ≈ 0 are "
                      "arbitrary; ask for fewer", RuntimeWarning, stacklevel=4)
    largest = v.gather(1, v.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    sign = torch.where(largest < 0, -1.0, 1.0).to(v.dtype)
    k = len(sigma)
    return LocalBasis(
        v=(sign[:, None] * v).reshape(k, *x.shape),
        sigma=sigma,
        u=(sign[:, None] * u).reshape(k, *y.shape),
        residual=residual,
        n_jvp=int(n_jvp),
        n_vjp=int(n_vjp),
        method=method,
        iterations=int(iterations),
    )


# ---------------------------------------------------------------------------------------------
# Input checks


def _pull_back_rows(pull_back: Callable, U: Tensor, chunk_size: int | None) -> Tensor:
    return torch.func.vmap(lambda u: pull_back(u)[0], chunk_size=chunk_size)(U)


def _push_forward_by_double_vjp(pull_back: Callable, y: Tensor) -> Callable[[Tensor], Tensor]:
    """v ↦ J v as the VJP of the linear map u ↦ Jᵀ u (at u = 0; any u gives the same)."""
    _, push = torch.func.vjp(lambda u: pull_back(u)[0], torch.zeros_like(y))
    return lambda v: push(v)[0]


def _check_tangents(V: Tensor, point: Tensor, name: str, point_name: str) -> None:
    check_tensor(name, V, shape=(None, *point.shape), like=point,
                 hint=f"stack the vectors along a new first dimension: (b, *{point_name}.shape)")


def _check_map_and_point(f: Map, x: Tensor) -> Tensor:
    """Check f and x and return y = f(x), evaluated once with autograd on to see that it depends on x."""
    check_callable("f", f, hint="a function from a tensor to a tensor")
    check_tensor("x", x, hint="the Jacobian is only defined at a finite point")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"x must be a float32 or float64 tensor, got {x.dtype}; the QR and SVD steps need "
            "single or double precision (for a half-precision model, wrap it: lambda x: model(x.half()).float())"
        )
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}); give the point where J is wanted")
    with torch.enable_grad():
        y = f(x.detach().requires_grad_(True))
    if not isinstance(y, Tensor):
        raise TypeError(
            f"f(x) must return a torch.Tensor, got {type(y).__name__}; "
            "wrap f so it returns the one tensor whose Jacobian you want (e.g. lambda x: model(x).sample)"
        )
    if not y.is_floating_point() or not y.requires_grad:
        raise ValueError(f"f does not depend on x differentiably: f(x) ({show(y)}) carries no gradient. f may detach "
                         "x, round or cast it to integers, take an argmax, or ignore it; local_basis needs a map "
                         "differentiable in x")
    y = y.detach()
    if not torch.isfinite(y).all():
        raise ValueError("f(x) contains NaN or infinite values; the Jacobian at this x is not usable")
    if x.ndim >= 2 and y.ndim >= 2 and x.shape[0] > 1 and y.shape[0] == x.shape[0]:
        raise ValueError(
            f"x has shape {tuple(x.shape)} and f(x) {tuple(y.shape)}: a batch of {x.shape[0]} points? local_basis "
            "finds the basis at ONE point: pass x[i:i+1] for each. (To treat them on purpose as one joint point, "
            "flatten: local_basis(lambda z: f(z.reshape(x.shape)).reshape(-1), x.reshape(-1), k).)"
        )
    return y
