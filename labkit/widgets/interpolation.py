"""The interpolation explorer (Part II, chapter 6): walk along the paths between two samples.

Explained in: book/part2-diffusion/06_interpolation.ipynb
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import ipywidgets as widgets
import torch

from labkit.cache import weights_fingerprint
from labkit.checks import check_float, check_int, show
from labkit.diffusion import sample_at, timestep_at
from labkit.editing import Interpolation, interpolate
from labkit.latent import to_pixels
from labkit.models import DiffusionModel
from labkit.widgets.base import Explorer, check_model, check_seed, condition_label
from labkit.widgets.player import static_player, to_png

INTERPOLATION_METHODS = ("lerp", "slerp", "geodesic")


class InterpolationExplorer(Explorer):
    """Walk along an interpolation between two samples; live widget in JupyterLab, static player in the book.

    model: a `labkit.models.DiffusionModel`; a text-conditioned one (`labkit.latent`) bound to its
    prompt and guidance scale, ``model.conditioned(prompt, guidance_scale=w)``; seed_a, seed_b:
    the noise seeds of the two samples; t_fraction: where on the way from noise to image they are
    interpolated, as a fraction of T (snapped to the DDIM schedule; 1.0 = the starting noise);
    n: points on each path; methods:
    the methods offered ("lerp", "slerp", "geodesic"); num_steps: the DDIM schedule;
    geodesic_steps: L-BFGS iterations for the geodesic; interpolations: paths already computed
    with `labkit.editing.interpolate` for the same samples and n, keyed by method (shown without
    recomputing). Display it (last expression of a cell) to show it.

    Controls: the method (lerp, slerp, or a geodesic of the pullback metric, see
    `labkit.editing.interpolate`) and a slider over the n points of the path. The image is the
    finished sample (DDIM from t to 0) of the point the slider selects; a label gives the path's
    length in X and in H, and the point's latent norm ‖x_t‖ (typical Gaussian latents have
    ‖x‖ ≈ √n, n = the latent's size).

    A latent model (Stable Diffusion, the shapes miniature) is explored exactly so, in its VAE
    latent z under its prompt c and scale w: the paths join z_t^a and z_t^b, the geodesic's metric
    is the pullback through ∂h/∂z_t under c, and each point is finished by CFG-guided DDIM in z;
    its z_0 is decoded, D(z_0 / s) clamped to [-1, 1], for the image, ``images(method)`` and the
    static player only (`labkit.latent.to_pixels`). The web book cannot run it live:
    ``live_config`` refuses it.

    What is computed when (one background thread that always serves the newest request):
    - a new method: the whole path and all n images, in one `labkit.editing.interpolate` call;
    - a slider move: nothing; the cached frame is shown at once.

    Attributes for tests and notebooks: those of `labkit.widgets.base.Explorer` (``slider`` is the
    point index), ``method`` (the method control), ``lengths`` (the label with the path lengths),
    ``computed`` (methods computed so far, in order), ``interpolation(method)``, ``images(method)``,
    ``wait()``.

    Explained in: book/part2-diffusion/06_interpolation.ipynb
    """

    def __init__(
        self,
        model: DiffusionModel,
        seed_a: int = 0,
        seed_b: int = 1,
        t_fraction: float = 1.0,
        n: int = 9,
        methods: Sequence[str] = INTERPOLATION_METHODS,
        num_steps: int = 50,
        geodesic_steps: int = 60,
        interpolations: dict[str, Interpolation] | None = None,
    ) -> None:
        methods = list(methods)
        if not methods or any(m not in INTERPOLATION_METHODS for m in methods):
            raise ValueError(f"methods must be a non-empty list drawn from {INTERPOLATION_METHODS}, got {methods}")
        model = check_model(model)
        n = check_int("n", n, 2, 200, hint="the number of path points")
        t_fraction = check_float("t_fraction", t_fraction, 0.0, 1.0, hint="a fraction of T in [0, 1]")
        seed_a, seed_b = check_seed("seed_a", seed_a), check_seed("seed_b", seed_b)
        check_int("geodesic_steps", geodesic_steps, 0, 10_000)
        if interpolations is not None and not isinstance(interpolations, dict):
            raise TypeError(f"interpolations must be a dict of method → Interpolation, got {show(interpolations)}")
        interpolations = dict(interpolations or {})
        for method, result in interpolations.items():
            if method not in methods:
                raise ValueError(f"interpolations has a path for {method!r}, which is not among methods {methods}")
            if not isinstance(result, Interpolation):
                raise TypeError(f"interpolations[{method!r}] must be an Interpolation (labkit.editing.interpolate), "
                                f"got {show(result)}")
            if len(result.images) != n:
                raise ValueError(f"the given {method} interpolation has {len(result.images)} points, but n={n}; "
                                 "compute it with the same n")
        self.model = model
        self.n = n
        self.geodesic_steps = geodesic_steps
        self.t_fraction = t_fraction
        t = timestep_at(model, t_fraction, num_steps)
        self.a = sample_at(model, seed_a, t, num_steps)
        self.b = sample_at(model, seed_b, t, num_steps)
        for method, result in interpolations.items():  # a given path must join these two samples
            ends = result.path[0], result.path[-1]
            if any(end.shape != x.shape or not torch.allclose(end.to(x), x, rtol=1e-4, atol=1e-4)
                   for end, x in zip(ends, (self.a.x_t, self.b.x_t))):
                raise ValueError(f"the given {method} path does not join samples {seed_a} and {seed_b} at t = {t}: "
                                 f"compute it with interpolate(model, sample_at(model, {seed_a}, {t}, {num_steps}), "
                                 f"sample_at(model, {seed_b}, {t}, {num_steps}), n={n})")
        condition = condition_label(model)
        self.title = f"{condition + '; ' if condition else ''}samples {seed_a} → {seed_b} at t = {t} ({t_fraction:g} T)"
        self._results: dict[str, Interpolation] = {}
        self._images: dict[str, torch.Tensor] = {}  # method → (n, C, H, W) images shown (decoded for a latent model)
        self._frames: dict[str, list[bytes]] = {}
        for method, result in interpolations.items():
            self._store(method, result)
        self.computed: list[str] = []  # methods computed here (not given), in order

        super().__init__("point", n, 0, what="the interpolation")
        self.method = widgets.ToggleButtons(options=methods, value=methods[0], description="method")
        self.lengths = widgets.Label("")
        self._start(
            [widgets.HTML(f"<b>{html.escape(self.title)}</b>"), self.method, self.image,
             widgets.HBox([self.slider, self.frame_label]), self.lengths, widgets.HBox([self.progress, self.status])],
            controls=[self.method])

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"InterpolationExplorer({self.title}, {self.n} points, {', '.join(self.method.options)})"

    @property
    def key(self) -> str:
        """The method selected now."""
        return self.method.value

    def _store(self, method: str, result: Interpolation) -> None:
        self._results[method] = result
        self._images[method] = to_pixels(self.model, result.images.detach()).cpu()
        self._frames[method] = [to_png(image, value_range=(-1, 1)) for image in self._images[method]]

    def _point_label(self, method: str, index: int) -> str:
        norm = float(self._results[method].path[index].norm())
        return f"point {index + 1} of {self.n}: ‖x_t‖ = {norm:.3g}"

    def _lengths_label(self, method: str) -> str:
        result = self._results[method]
        return (f"{method}: length in X {result.x_length:.4g}, in H {result.h_length:.4g} "
                f"(typical ‖x_t‖ ≈ √n = {math.sqrt(self.a.x_t.numel()):.3g})")

    # The live path ---------------------------------------------------------------------------

    def _cached(self, method: str) -> bool:
        return method in self._frames

    def _compute(self, method: str) -> None:
        result = interpolate(self.model, self.a, self.b, n=self.n, method=method, geodesic_steps=self.geodesic_steps)
        with self._lock:
            self._store(method, result)
            self.computed.append(method)

    def _display(self, method: str) -> None:
        self.image.value = self._frames[method][self.slider.value]
        self.frame_label.value = self._point_label(method, self.slider.value)
        self.lengths.value = self._lengths_label(method)

    def _busy(self, method: str | None) -> None:
        self.progress.layout.visibility = "hidden" if method is None else "visible"
        self.status.value = "" if method is None else f"computing the {method} path and its {self.n} images …"

    # Results -----------------------------------------------------------------------------------

    def interpolation(self, method: str) -> Interpolation:
        """The `labkit.editing.Interpolation` (path, images, lengths) of one method, computed if needed."""
        if method not in self.method.options:
            raise ValueError(f"method must be one of {list(self.method.options)}, got {method!r}")
        self.wait()
        if method not in self._results:
            self._compute(method)
        return self._results[method]

    def images(self, method: str) -> torch.Tensor:
        """The n finished images of one method's path, (n, C, H, W) in [-1, 1], computed if needed: for a
        latent model the decoded pixels D(z_0 / s), (n, *model.image_shape), where ``interpolation(method)``
        holds the latents."""
        self.interpolation(method)
        return self._images[method]

    def live_config(self) -> dict:
        """What the web book's live explorer needs to compute what this one computes (JSON-ready);
        it runs lerp and slerp (a geodesic needs the Jacobian, which the browser does not have).
        NotImplementedError for a latent model, which is not exported to the web."""
        self._check_exported()
        return {"explorer": "interpolation", "model": self.model.name,
                "weights": weights_fingerprint(self.model.unet)[:16], "num_steps": self.a.num_steps,
                "t_fraction": self.t_fraction, "seed_a": self.a.seed, "seed_b": self.b.seed, "n": self.n,
                "methods": [m for m in self.method.options if m in ("lerp", "slerp")]}

    def to_html(self) -> str:
        """One static player per method (all paths computed), for pages without a kernel, in a
        `live_container` with ``live_config()`` (alone for a latent model)."""
        players = []
        for method in self.method.options:
            self.interpolation(method)
            labels = [self._point_label(method, i) for i in range(self.n)]
            title = f"{self.title}, {self._lengths_label(method)}"
            players.append(static_player(self._frames[method], labels, title=title, value=self.slider.value))
        return self._page("\n".join(players))
