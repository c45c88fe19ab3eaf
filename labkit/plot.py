"""Figures the book reuses: surfaces, curves and tangent vectors on them, metric ellipses.

A flat module of functions. Each draws into an existing matplotlib Axes when given one (so
figures can be composed), creates one otherwise, and returns it. Maps are labkit.geometry
maps (chart coordinates -> points in R^3 for the 3-D functions).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from labkit.geometry import Map, jacobian, pullback_metric


def _axes_3d(ax: Axes | None) -> Axes:
    if ax is None:
        ax = plt.figure(figsize=(5, 5)).add_subplot(projection="3d")
    if ax.name != "3d":
        raise ValueError("this figure needs 3-D axes: fig.add_subplot(projection='3d').")
    return ax


def chart_grid(u_range: tuple[float, float], v_range: tuple[float, float], n_u: int, n_v: int) -> Tensor:
    """A regular grid of chart points, shape (n_u * n_v, 2), float64 (u varies slowest)."""
    u = torch.linspace(*u_range, n_u, dtype=torch.float64)
    v = torch.linspace(*v_range, n_v, dtype=torch.float64)
    return torch.cartesian_prod(u, v)


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
    if grid.ndim != 2 or grid.shape[1] != 2:
        raise ValueError(f"grid must have shape (K, 2) (chart points), got {tuple(grid.shape)}.")
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
