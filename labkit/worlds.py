"""A small world with known factors: RGB scenes rendered from explicit numbers.

A scene is a wall (upper part) and a floor (lower part), each of one colour, and one object
standing in front of them. Seven factors make it (``FACTORS``):

    object_hue, wall_hue, floor_hue ∈ [0, 1]     circular (0 ≡ 1): the colour wheel
    scale ∈ [0.25, 0.45]                         the object's half-size, in units of the half-image
    x_position ∈ [-0.45, 0.45]                   the object's centre, left to right
    rotation ∈ [-0.6, 0.6] rad                   about ±34°, less than any shape's symmetry angle
    shape ∈ {square, triangle, ellipse}          categorical

Colours come from a smooth colour wheel, c(h) = b + a·cos(2π(h − k/3)), k = 0, 1, 2 for R, G, B.
The three cosines sum to zero, so every colour of one surface has the same grey level b: the
object (b = 0.55, a = 0.45), the wall (0.78, 0.18) and the floor (0.28, 0.18) always differ in
brightness, whatever their hues, and the object never vanishes into the background.

The object is drawn by its signed distance s(p) in its own frame, p' = R(−θ)(p − c)/scale, and
a soft coverage σ(−s·scale/w) (logistic, w = 0.4 pixel), evaluated at
``supersample``² points per pixel and averaged: anti-aliasing by supersampling, and a map from
the continuous factors to the image that is smooth (differentiable, so torch.func.jacfwd
gives its Jacobian). Pixel = wall·(1 − m_floor) + floor·m_floor, then object·cov + pixel·(1 − cov).

``render`` is one batch of torch operations, no Python loop over images: about a few thousand
32×32 images per second on one CPU core, so training renders its data on the fly.

Explained in: book/part2-diffusion/08_known_factors.ipynb
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from labkit.checks import check_float, check_int, check_tensor

IMAGE_SIZE = 32
SHAPES = ("square", "triangle", "ellipse")
HORIZON = -0.15  # the wall/floor boundary, in image coordinates (y up, [-1, 1])
OBJECT_Y = -0.15  # the object's centre height: it stands across the horizon
ELLIPSE_AXES = (1.0, 0.6)  # semi-axes, in units of scale
EDGE = 0.4  # width of the soft edge, in pixels
MAX_SCENES = 10**7  # sample_factors: 10⁷ scenes' factors take about 0.4 GB
MAX_SUBPIXELS = 2**26  # render: about 1.6 GB of working memory (16,384 scenes of 32×32, supersample 2)


@dataclass(frozen=True)
class Factor:
    """One factor of the world: its range [low, high] and kind.

    kind: "circular" (low ≡ high, a hue), "continuous", or "categorical" (values 0..len(values)−1).
    """

    low: float
    high: float
    kind: str
    values: tuple[str, ...] = ()

    @property
    def std(self) -> float:
        """The standard deviation of the factor under ``sample_factors`` (uniform): (high − low)/√12.

        For a circular factor it is the root-mean-square circular distance of a uniform hue from
        any fixed hue, which is the same number. Categorical factors: NaN (no scale).
        """
        return math.nan if self.kind == "categorical" else (self.high - self.low) / math.sqrt(12)


FACTORS: dict[str, Factor] = {
    "object_hue": Factor(0.0, 1.0, "circular"),
    "wall_hue": Factor(0.0, 1.0, "circular"),
    "floor_hue": Factor(0.0, 1.0, "circular"),
    "scale": Factor(0.25, 0.45, "continuous"),
    "x_position": Factor(-0.45, 0.45, "continuous"),
    "rotation": Factor(-0.6, 0.6, "continuous"),
    "shape": Factor(0, len(SHAPES) - 1, "categorical", SHAPES),
}
CONTINUOUS = tuple(name for name, f in FACTORS.items() if f.kind != "categorical")

# (grey level b, colour amplitude a) of each surface's colour wheel
_OBJECT_COLOUR, _WALL_COLOUR, _FLOOR_COLOUR = (0.55, 0.45), (0.78, 0.18), (0.28, 0.18)


def sample_factors(n: int, seed: int = 0) -> dict[str, Tensor]:
    """n scenes' factors, each uniform on its range (shape uniform over SHAPES), from a seeded generator.

    Returns {name: (n,) tensor}: float32 for continuous and circular factors, int64 for shape.
    """
    n = check_int("n", n, 1, MAX_SCENES, hint="draw large sets in chunks with different seeds")
    gen = torch.Generator().manual_seed(check_int("seed", seed, 0, 2**63 - 1))
    out = {}
    for name, f in FACTORS.items():
        if f.kind == "categorical":
            out[name] = torch.randint(0, len(f.values), (n,), generator=gen)
        else:
            out[name] = f.low + (f.high - f.low) * torch.rand(n, generator=gen)
    return out


def check_factors(factors: dict[str, Tensor]) -> int:
    """Check a factor dictionary before rendering; returns n, the number of scenes.

    Every name of FACTORS must be there and no other; each value a 1-D tensor of the same length,
    finite and within its range; shape must hold integers 0..len(SHAPES)−1.
    """
    if not isinstance(factors, dict):
        raise TypeError(f"factors must be a dict of name → (n,) tensor, got {type(factors).__name__}")
    unknown = sorted(set(factors) - set(FACTORS))
    if unknown:
        raise ValueError(f"unknown factor name(s) {unknown}; the factors are {list(FACTORS)}")
    missing = [name for name in FACTORS if name not in factors]
    if missing:
        raise ValueError(f"missing factor(s) {missing}; give all of {list(FACTORS)} (sample_factors makes a full set)")
    n = None
    for name, f in FACTORS.items():
        value = factors[name]
        if not isinstance(value, Tensor) or value.ndim != 1:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"factor {name!r} must be a 1-D tensor of shape (n,), got {got}")
        if n is None:
            n = len(value)
        if len(value) != n or n == 0:
            raise ValueError(f"factor {name!r} has {len(value)} values, the first factor has {n}; "
                             "give every factor the same number n ≥ 1 of values")
        if f.kind == "categorical":
            if value.is_floating_point() or value.is_complex():
                raise ValueError(f"factor {name!r} must be an integer tensor (indices into {f.values}), "
                                 f"got dtype {value.dtype}")
        elif not value.is_floating_point():
            raise ValueError(f"factor {name!r} must be a floating-point tensor, got dtype {value.dtype}")
        elif not torch.isfinite(value).all():
            raise ValueError(f"factor {name!r} contains NaN or infinite values")
        bad = (value < f.low) | (value > f.high)
        if bad.any():
            raise ValueError(f"factor {name!r} = {value[bad][0].item():.4g} is out of its range "
                             f"[{f.low}, {f.high}]; clamp it or draw it with sample_factors")
    return n


def hue_colour(hue: Tensor, grey: float, amplitude: float) -> Tensor:
    """The smooth colour wheel: (n,) hues → (n, 3) RGB in [0, 1], c_k = grey + amplitude·cos(2π(h − k/3)).

    grey and amplitude: with 0 ≤ grey − amplitude and grey + amplitude ≤ 1 every colour is in [0, 1]."""
    check_tensor("hue", hue, ndim=1, hint="(n,) hues in [0, 1], e.g. factors['object_hue']")
    grey = check_float("grey", grey, 0.0, 1.0, hint="the surface's grey level b, e.g. 0.55")
    check_float("amplitude", amplitude, 0.0, min(grey, 1.0 - grey), hint="a ≤ min(b, 1 − b) keeps colours in [0, 1]")
    return _wheel(hue, grey, amplitude)


def _wheel(hue: Tensor, grey: float, amplitude: float) -> Tensor:
    """hue_colour without the checks: render's factors are checked once, by check_factors."""
    k = torch.arange(3, dtype=hue.dtype, device=hue.device)
    return grey + amplitude * torch.cos(2 * math.pi * (hue[:, None] - k / 3))


def _signed_distance(px: Tensor, py: Tensor, shape: int) -> Tensor:
    """Signed distance-like function of one shape of unit size, at points (px, py) in the object's frame.

    Negative inside. square: max(|x|, |y|) − 0.8 (so its area is close to the others');
    triangle (equilateral, pointing up, centroid 0.2 below the origin): max over the three edge
    normals n_j of n_j·p − 0.5; ellipse: (‖(x/a, y/b)‖ − 1)·b.
    """
    if SHAPES[shape] == "square":
        return torch.maximum(px.abs(), py.abs()) - 0.8
    if SHAPES[shape] == "triangle":
        # edge normals: straight down, and ±30° above the horizontal
        py = py + 0.2
        side = (math.sqrt(3) / 2) * px.abs() + 0.5 * py
        return torch.maximum(-py, side) - 0.5
    a, b = ELLIPSE_AXES
    return (torch.sqrt((px / a) ** 2 + (py / b) ** 2 + 1e-12) - 1) * b


def check_render_size(n: int, size: int, supersample: int) -> None:
    """Refuse, before allocating, a render whose working memory (about 24 bytes per sub-pixel) is
    out of bounds: size in 4..1024, supersample in 1..16, n·(size·supersample)² ≤ MAX_SUBPIXELS."""
    size = check_int("size", size, 4, 1024, hint=f"the world's images are {IMAGE_SIZE}×{IMAGE_SIZE}")
    supersample = check_int("supersample", supersample, 1, 16, hint="2 anti-aliases well")
    per_scene = (size * supersample) ** 2
    if per_scene > MAX_SUBPIXELS:
        raise ValueError(f"size={size} with supersample={supersample} needs about {24 * per_scene / 1e9:.1f} GB for "
                         f"one scene alone; lower the size or the supersampling (size·supersample ≤ "
                         f"{int(MAX_SUBPIXELS ** 0.5)})")
    if n * per_scene > MAX_SUBPIXELS:
        raise ValueError(f"factors hold {n} scenes: rendering them at size={size}, supersample={supersample} needs "
                         f"about {24 * n * per_scene / 1e9:.1f} GB; render at most {MAX_SUBPIXELS // per_scene} "
                         "scenes per call (split the factors into chunks and torch.cat the images)")


def render(factors: dict[str, Tensor], size: int = IMAGE_SIZE, supersample: int = 2) -> Tensor:
    """Render n scenes: factors {name: (n,)} → images (n, 3, size, size) in [-1, 1].

    Differentiable in the continuous factors (use torch.func.jacfwd on a function that fills
    the other factors in). Deterministic: no randomness at all.

    Only the object's coverage is computed at the supersampled resolution. The colours enter
    linearly, so with P the average over each pixel's sub-pixels, m the floor mask and c the
    coverage:  image = c_obj·P(c) + c_wall·P((1 − m)(1 − c)) + c_floor·P(m(1 − c)).
    """
    n = check_factors(factors)
    check_render_size(n, size, supersample)
    f = _on_one_device(factors)
    object_share, wall_share, floor_share = _shares(f, n, size, supersample)
    image = (_wheel(f["object_hue"], *_OBJECT_COLOUR)[:, :, None, None] * object_share
             + _wheel(f["wall_hue"], *_WALL_COLOUR)[:, :, None, None] * wall_share
             + _wheel(f["floor_hue"], *_FLOOR_COLOUR)[:, :, None, None] * floor_share)
    return image * 2 - 1


def _on_one_device(factors: dict[str, Tensor]) -> dict[str, Tensor]:
    dtype, device = factors["scale"].dtype, factors["scale"].device
    return {name: (v.to(device) if name == "shape" else v.to(device, dtype)) for name, v in factors.items()}


def _shares(f: dict[str, Tensor], n: int, size: int, supersample: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each pixel's shares (n, 1, size, size) of the object, the wall and the floor (they sum to 1)."""
    dtype, device = f["scale"].dtype, f["scale"].device

    # sub-pixel centres in image coordinates: x to the right, y up, both in [-1, 1]
    side = size * supersample
    grid = (torch.arange(side, dtype=dtype, device=device) + 0.5) / side * 2 - 1
    gy, gx = -grid[:, None], grid[None, :]  # (side, 1), (1, side): row 0 is the top
    edge = EDGE * 2 / size  # the soft edge's width, in image coordinates

    scale = f["scale"].view(n, 1, 1)
    cos, sin = torch.cos(f["rotation"]).view(n, 1, 1), torch.sin(f["rotation"]).view(n, 1, 1)
    dx, dy = gx - f["x_position"].view(n, 1, 1), gy - OBJECT_Y  # (n, 1, side) and (side, 1) → (n, side, side)
    px, py = (cos * dx + sin * dy) / scale, (-sin * dx + cos * dy) / scale  # R(−θ)(p − c)/scale
    # each scene's own shape only: group the scenes by shape (a loop over shapes, not scenes)
    distance = torch.zeros_like(px)
    for k in range(len(SHAPES)):
        index = (f["shape"] == k).nonzero().squeeze(1)
        if len(index):
            d = _signed_distance(px[index], py[index], k) * scale[index]  # back to image units
            distance = distance.index_put((index,), d)
    cover = torch.sigmoid(-distance / edge)  # (n, side, side)

    floor = torch.sigmoid((HORIZON - gy) / edge).expand(side, side)  # soft horizon
    pool = (lambda a: torch.nn.functional.avg_pool2d(a, supersample)) if supersample > 1 else (lambda a: a)
    object_share = pool(cover[:, None])  # (n, 1, size, size)
    floor_share = pool(floor[None, None]) - pool((floor * cover)[:, None])
    wall_share = 1 - object_share - floor_share
    return object_share, wall_share, floor_share


def object_mask(factors: dict[str, Tensor], size: int = IMAGE_SIZE, supersample: int = 2) -> Tensor:
    """The object's share of each pixel, (n, 1, size, size) in [0, 1]: where an edit of the object
    should act (LOCO-Edit's mask, book/part2-diffusion/08_known_factors.ipynb)."""
    n = check_factors(factors)
    check_render_size(n, size, supersample)  # the same working memory as a render
    return _shares(_on_one_device(factors), n, size, supersample)[0]


def tangent_basis(factors: dict[str, Tensor]) -> Tensor:
    """The world's tangent space at each scene: (n, D, 6) orthonormal columns spanning the column space
    of ∂render/∂(continuous factors), D = 3·32·32, from the exact Jacobian (torch.func.jacfwd).

    The data manifold of the world is the image of the six continuous factors (for each shape), so
    at render(f) its tangent space is this span; an image change Δ has the on-manifold share
    ‖QᵀΔ‖²/‖Δ‖² (book/part2-diffusion/08_known_factors.ipynb).
    """
    n = check_factors(factors)
    if n > 10_000:
        raise ValueError(f"factors hold {n} scenes: tangent_basis builds an (n, 3072, 6) Jacobian, one scene at a "
                         "time; pass at most 10,000 scenes per call")
    # in float64, with each continuous factor clamped to its range again: a float32 value on the edge
    # (a read-out clamps to it) is a hair outside the range once widened (float32 0.6 > 0.6)
    f = {name: v if FACTORS[name].kind == "categorical" else
         v.double().clamp(FACTORS[name].low, FACTORS[name].high) if FACTORS[name].kind == "continuous" else v.double()
         for name, v in _on_one_device(factors).items()}
    bases = []
    for i in range(n):
        point = {name: v[i:i + 1] for name, v in f.items()}

        def image(values: Tensor, point: dict[str, Tensor] = point) -> Tensor:
            return render(dict(point, **{c: values[j:j + 1] for j, c in enumerate(CONTINUOUS)})).reshape(-1)

        jac = torch.func.jacfwd(image)(torch.cat([point[c] for c in CONTINUOUS]))
        bases.append(torch.linalg.qr(jac).Q)
    return torch.stack(bases)
