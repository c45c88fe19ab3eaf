"""Figures the book reuses: surfaces, curves and tangent vectors on them, metric ellipses, image grids.

A flat module of functions. Each draws into existing matplotlib Axes when given them (so
figures can be composed), creates them otherwise, and returns them (``image_grid``: the figure).
Maps are labkit.geometry maps (chart coordinates -> points in R^3 for the 3-D functions).

Explained in: book/part1-geometry/04_pullback_metric.ipynb (images: book/part2-diffusion/03_diffusion.ipynb)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from labkit.checks import check_callable, check_float, check_int, check_tensor, show
from labkit.geometry import Map, jacobian, pullback_metric

# How pixel values map to black..white: a fixed (low, high) for every image; "own": each image from
# its own min to max; "symmetric": each over ±max|value| (0 in the middle, for signed directions).
ValueRange = tuple[float, float] | Literal["own", "symmetric"]
MAX_IMAGES = 2500  # image_grid: matplotlib takes minutes to lay out more axes than this


def check_value_range(value_range: object) -> ValueRange:
    """"own", "symmetric", or (low, high): two finite numbers with high > low (never silently swapped)."""
    if value_range in ("own", "symmetric"):
        return value_range
    if not isinstance(value_range, tuple | list) or len(value_range) != 2:
        raise TypeError(f"value_range must be (low, high), 'own' or 'symmetric', got {show(value_range)}")
    low = check_float("value_range[0]", value_range[0])
    high = check_float("value_range[1]", value_range[1])
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {show(value_range)}; "
                         f"did you mean ({high:g}, {low:g})?")
    return low, high


def _axes_3d(ax: Axes | None) -> Axes:
    if ax is None:
        ax = plt.figure(figsize=(5, 5)).add_subplot(projection="3d")
    if ax.name != "3d":
        raise ValueError("this figure needs 3-D axes: fig.add_subplot(projection='3d').")
    return ax


def chart_grid(u_range: tuple[float, float], v_range: tuple[float, float], n_u: int, n_v: int) -> Tensor:
    """A regular grid of chart points, shape (n_u * n_v, 2), float64 (u varies slowest)."""
    u_range, v_range = _check_range("u_range", u_range), _check_range("v_range", v_range)
    check_int("n_u", n_u, 1, 10_000), check_int("n_v", n_v, 1, 10_000)
    u = torch.linspace(*u_range, n_u, dtype=torch.float64)
    v = torch.linspace(*v_range, n_v, dtype=torch.float64)
    return torch.cartesian_prod(u, v)


def _check_range(name: str, interval: object) -> tuple[float, float]:
    if not isinstance(interval, tuple | list) or len(interval) != 2:
        raise TypeError(f"{name} must be (low, high), got {show(interval)}")
    return check_float(f"{name}[0]", interval[0]), check_float(f"{name}[1]", interval[1])


def surface(
    f: Map,
    u_range: tuple[float, float],
    v_range: tuple[float, float],
    ax: Axes | None = None,
    n: int = 40,
    color: str = "lightsteelblue",
    alpha: float = 0.35,
) -> Axes:
    """Draw the surface f(u, v) over a chart rectangle as a light wireframe-shaded mesh (3-D Axes)."""
    check_callable("f", f)
    u_range, v_range = _check_range("u_range", u_range), _check_range("v_range", v_range)
    check_int("n", n, 2, 500)
    check_float("alpha", alpha, 0.0, 1.0)
    ax = _axes_3d(ax)
    u = torch.linspace(*u_range, n, dtype=torch.float64)
    v = torch.linspace(*v_range, n, dtype=torch.float64)
    uu, vv = torch.meshgrid(u, v, indexing="ij")
    xyz = f(torch.stack([uu, vv], dim=-1)).detach().numpy()
    ax.plot_surface(xyz[..., 0], xyz[..., 1], xyz[..., 2], color=color, alpha=alpha,
                    edgecolor="grey", linewidth=0.2, rstride=2, cstride=2)
    ax.set_box_aspect(np.ptp(xyz.reshape(-1, 3), axis=0))
    ax.set_axis_off()
    return ax


def curve_on_surface(f: Map, path: Tensor, ax: Axes | None = None, **plot_kwargs) -> Axes:
    """Draw the image f(path) of a chart path of shape (N+1, 2) as a 3-D line."""
    check_callable("f", f)
    check_tensor("path", path, shape=(None, 2))
    ax = _axes_3d(ax)
    xyz = f(path).detach().numpy()
    ax.plot(xyz[:, 0], xyz[:, 1], xyz[:, 2], **{"linewidth": 2, **plot_kwargs})
    return ax


def tangent_arrows(
    f: Map, points: Tensor, vectors: Tensor, ax: Axes | None = None, length: float = 0.4, **quiver_kwargs
) -> Axes:
    """Draw tangent vectors (chart coordinates, shape (K, 2)) at chart points (K, 2) as 3-D arrows J v.

    Each arrow is the pushed-forward vector J v, scaled by ``length`` (a common scale, so the
    relative lengths stay true).
    """
    check_callable("f", f)
    check_tensor("points", points, shape=(None, 2))
    check_tensor("vectors", vectors, shape=(len(points), 2), hint="one chart vector per point")
    check_float("length", length, 0.0, low_open=True)
    ax = _axes_3d(ax)
    base = f(points).detach().numpy()
    arrows = np.stack([(jacobian(f, x) @ v).detach().numpy() for x, v in zip(points, vectors)])
    ax.quiver(base[:, 0], base[:, 1], base[:, 2], arrows[:, 0], arrows[:, 1], arrows[:, 2],
              length=length, **{"color": "crimson", "linewidth": 1.5, **quiver_kwargs})
    return ax


def metric_ellipses(f: Map, grid: Tensor, ax: Axes | None = None, size: float | None = None, **plot_kwargs) -> Axes:
    """Draw, at each chart point of ``grid`` (K, 2), the ellipse {v : vᵀ G v = c²}, G = Jᵀ J.

    The ellipse holds the chart steps that f maps to the same output length c: it is small and
    thin where f stretches. All ellipses use one c, chosen (unless ``size`` gives it) so that the
    largest ellipse spans about 40% of the grid spacing.
    """
    check_callable("f", f)
    check_tensor("grid", grid, shape=(None, 2), hint="chart points, e.g. chart_grid(...)")
    if size is not None:
        check_float("size", size, 0.0, low_open=True)
    if ax is None:
        ax = plt.figure(figsize=(5, 5)).add_subplot()
    metrics = [pullback_metric(f, x) for x in grid]
    # boundary of {v : vᵀ G v = 1}: v = Q Λ^{-1/2} (cos s, sin s) with G = Q Λ Qᵀ
    s = torch.linspace(0, 2 * np.pi, 60, dtype=grid.dtype)
    circle = torch.stack([torch.cos(s), torch.sin(s)])
    shapes = []
    for G in metrics:
        lam, Q = torch.linalg.eigh(G)
        if not bool(lam.min() > 0):
            raise ValueError("metric_ellipses: the metric is degenerate at a grid point (a chart singularity?).")
        shapes.append(Q @ (circle / lam.sqrt()[:, None]))
    if size is None:
        points = grid.detach().numpy()
        gaps = np.linalg.norm(points[:, None] - points[None], axis=-1) + np.eye(len(points)) * 1e12
        spacing = gaps.min()
        largest = max(float(shape.abs().max()) for shape in shapes)
        size = 0.4 * spacing / largest
    for x, shape in zip(grid, shapes):
        e = (x[:, None] + size * shape).detach().numpy()
        ax.plot(e[0], e[1], **{"color": "tab:blue", "linewidth": 1, **plot_kwargs})
    ax.set_aspect("equal")
    return ax


def _image_rows(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """The rows of images, each checked: floating point (uint8 0..255: convert first), finite, non-empty."""
    hint = "images in a float range such as [-1, 1] (uint8 0..255: labkit.data.to_unit_range(images))"
    if torch.is_tensor(images):
        check_tensor("images", images, hint=hint)
        if images.dim() not in (4, 5):
            raise ValueError(f"images must have shape (S, C, H, W) or (R, S, C, H, W), got {tuple(images.shape)}")
        rows = [images] if images.dim() == 4 else list(images)
    elif isinstance(images, list | tuple):
        rows = [check_tensor(f"images[{r}]", row, ndim=4, hint=hint) for r, row in enumerate(images)]
    else:
        raise TypeError(f"images must be a tensor or a list of (S, C, H, W) tensors, got {type(images).__name__}")
    if not rows or any(len(row) == 0 for row in rows):
        raise ValueError("images must be a tensor or a non-empty list of non-empty (S, C, H, W) batches, one per row")
    if sum(map(len, rows)) > MAX_IMAGES:
        raise ValueError(f"images holds {sum(map(len, rows))} images; image_grid draws at most {MAX_IMAGES} "
                         "(show a subset)")
    return rows


def _picture(image: Tensor, value_range: ValueRange) -> tuple[np.ndarray, float, float]:
    """One image (C, H, W) -> (what imshow draws, vmin, vmax): (H, W) grey for C = 1, (H, W, 3) in [0, 1] for C = 3."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"each image must have shape (1, H, W) or (3, H, W), got {tuple(image.shape)}")
    image = image.detach().cpu().double()
    if value_range == "own":
        low, high = image.min().item(), image.max().item()
    elif value_range == "symmetric":
        high = image.abs().max().item()
        low = -high
    else:
        low, high = value_range
    if not high > low:  # a constant image
        low, high = low - 1.0, low + 1.0
    if image.shape[0] == 1:
        return image[0].numpy(), low, high
    return ((image - low) / (high - low)).clamp(0, 1).permute(1, 2, 0).numpy(), 0.0, 1.0


def image_grid(
    images: Tensor | Sequence[Tensor],
    row_labels: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    titles: Sequence[Sequence[str]] | None = None,
    value_range: ValueRange = (-1.0, 1.0),
    cmap: str = "gray",
    size: float = 1.0,
    axes: np.ndarray | None = None,
) -> Figure:
    """Draw images (C, H, W) in a grid, one row per batch: grey (C = 1, through ``cmap``) or colour (C = 3).

    images: one batch (S, C, H, W) (one row), a stack (R, S, C, H, W), or a list of R batches
    (rows may differ in length). value_range: (low, high) maps to black..white for every image
    (default (-1, 1), a diffusion model's range); "own" stretches each image from its min to its
    max (latents x_t); "symmetric" shows each over ±max|value| (directions v, with a diverging
    cmap such as "RdBu_r"). row_labels: one per row, on the left; col_titles: one per column,
    above the first row; titles: one per image (a list of lists), instead of col_titles.
    size: inches per image. axes: an R × S array of Axes to draw into (to compose figures);
    by default a new figure. Returns the figure (show it with plt.show()).

    Explained in: book/part2-diffusion/03_diffusion.ipynb
    """
    rows = _image_rows(images)
    value_range = check_value_range(value_range)
    check_float("size", size, 0.0, 20.0, low_open=True, hint="inches per image")
    n_rows, n_cols = len(rows), max(len(row) for row in rows)
    for name, labels, count in (("row_labels", row_labels, n_rows), ("col_titles", col_titles, n_cols)):
        if labels is not None and len(labels) != count:
            raise ValueError(f"{name} must have one entry per {name[:3]} ({count}), got {len(labels)}")
    if titles is not None and [len(t) for t in titles] != [len(row) for row in rows]:
        raise ValueError("titles must have one title per image: a list of lists shaped like the rows")
    if axes is None:
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows + 0.3), squeeze=False)
    else:
        axes = np.asarray(axes, dtype=object)
        if axes.size != n_rows * n_cols:
            raise ValueError(f"axes must hold {n_rows} × {n_cols} Axes for these images, got {axes.size}")
        axes = axes.reshape(n_rows, n_cols)
        fig = axes[0, 0].figure
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c >= len(row):
                ax.set_axis_off()
                continue
            picture, low, high = _picture(row[c], value_range)
            ax.imshow(picture, cmap=cmap, vmin=low, vmax=high)
            title = titles[r][c] if titles is not None else (col_titles[c] if col_titles and r == 0 else "")
            if title:
                ax.set_title(title, fontsize=8)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    return fig
