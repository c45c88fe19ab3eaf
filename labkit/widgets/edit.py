"""The edit explorer (Part II, chapter 5): a sample, one of its local directions, every strength.

Explained in: book/part2-diffusion/05_editing.ipynb
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch

from labkit.cache import weights_fingerprint
from labkit.checks import check_choice, check_float, check_int
from labkit.diffusion import QUALITY_BOOST, sample_at, timestep_at
from labkit.editing import edit, sample_basis, x_space_guidance
from labkit.latent import to_pixels
from labkit.models import DiffusionModel
from labkit.widgets.base import Explorer, check_model, check_seed, condition_label
from labkit.widgets.player import static_player, to_png

EDIT_METHODS = ("guidance", "naive")
GAP = 2  # pixels of mid-grey between the original and the edit in the composed image


def _side_by_side(images: Sequence[torch.Tensor], gap: int = GAP) -> np.ndarray:
    """Images (C, H, W) in [-1, 1] in one row, separated by mid-grey columns: (H, W', C) float32."""
    columns = []
    for i, image in enumerate(images):
        array = image.detach().cpu().float().permute(1, 2, 0).numpy()
        if i > 0:
            columns.append(np.zeros((array.shape[0], gap, array.shape[2]), dtype=np.float32))  # 0: mid-grey in [-1, 1]
        columns.append(array)
    return np.concatenate(columns, axis=1)


class EditExplorer(Explorer):
    """Edit a sample along one of its local directions; live widget in JupyterLab, static player in the book.

    model: a `labkit.models.DiffusionModel`; a text-conditioned one (`labkit.latent`) bound to its
    prompt and guidance scale, ``model.conditioned(prompt, guidance_scale=w)``; seeds: the noise
    seeds of the samples offered; t_fractions: the edit times offered, as fractions of T (each
    snapped to the DDIM schedule by `labkit.diffusion.timestep_at`); k: how many directions
    v_1..v_k to offer;
    strengths: the γ values, signed (default torch.linspace(-1, 1, 9));
    method: the initial method, "guidance" (x-space guidance) or "naive" (x_t + γ v);
    cache_dir: where local bases are cached (safetensors); save_dir: where "save strip" writes;
    edit_options: passed to x-space guidance (delta, n_iter). Display it (last expression of a
    cell) to show it.

    Controls: sample (seed), t (a fraction of T), direction i (v_i of the sample's local basis),
    method (x-space guidance or the naive x_t + γ v) and the strength γ (sign included: γ < 0
    moves along −v_i). The image shows the unedited sample (left) and the edit (right).

    A latent model (Stable Diffusion, the shapes miniature) is explored exactly so, in its VAE
    latent z under its prompt c and scale w: x_t is z_t, v_i the top right singular vectors of
    ∂h/∂z_t under c, and the edit runs CFG-guided DDIM in z; the finished latents z_0 are decoded,
    D(z_0 / s) clamped to [-1, 1], for the image, the strip, the saved PNG and the static player
    only (`labkit.latent.to_pixels`). The web book cannot run it live: ``live_config`` refuses it.

    What is computed when (all in one background thread that always serves the newest request,
    so rapid control changes never pile up work):
    - a new (seed, t): the latent x_t (`labkit.diffusion.sample_at`) and its top-k local basis
      (`labkit.editing.sample_basis`, read from ``cache_dir`` when it is there);
    - a new (seed, t, direction, method): every strength in one batched `labkit.editing.edit`;
    - a strength-slider move: nothing; the cached frame is shown at once.

    Attributes for tests and notebooks: those of `labkit.widgets.base.Explorer` (``slider`` is the
    strength index), ``seed``, ``t``, ``direction``, ``method`` (the other controls), ``computed``
    (the (seed, t_fraction, direction, method) keys edited so far, in order), ``wait()``.

    Explained in: book/part2-diffusion/05_editing.ipynb
    """

    def __init__(
        self,
        model: DiffusionModel,
        seeds: Sequence[int] = (0, 1, 2, 3),
        t_fractions: Sequence[float] = (1.0, 0.8, 0.6),
        k: int = 5,
        strengths: torch.Tensor | Sequence[float] | None = None,
        method: str = "guidance",
        cache_dir: str | os.PathLike | None = None,
        num_steps: int = 50,
        save_dir: str | os.PathLike = ".",
        edit_options: dict | None = None,
    ) -> None:
        model = check_model(model)
        k = check_int("k", k, 1, 64, hint="the number of directions offered")
        if isinstance(seeds, str):
            check_seed("seeds", seeds, "a list of noise seeds (ints)")
        seeds = [check_seed(f"seeds[{i}]", s) for i, s in enumerate(seeds)]
        if not seeds:
            raise ValueError("seeds is empty: give at least one noise seed, e.g. seeds=(0, 1)")
        t_fractions = [check_float(f"t_fractions[{i}]", f, 0.0, 1.0, hint="a fraction of T")
                       for i, f in enumerate(t_fractions)]
        if not t_fractions:
            raise ValueError("t_fractions is empty: give at least one fraction of T, e.g. t_fractions=(0.6,)")
        check_choice("method", method, EDIT_METHODS)
        num_steps = check_int("num_steps", num_steps, 1, 1000)
        if strengths is None:
            strengths = torch.linspace(-1.0, 1.0, 9)
        if not isinstance(strengths, torch.Tensor | Sequence):
            raise TypeError(f"strengths must be a list or 1-D tensor of numbers, got {type(strengths).__name__}")
        strengths = torch.as_tensor(strengths, dtype=torch.float32).reshape(-1)
        if not 1 <= len(strengths) <= 101 or not torch.isfinite(strengths).all():
            raise ValueError("strengths must be a list of 1 to 101 finite numbers, e.g. torch.linspace(-1, 1, 9), "
                             f"got {len(strengths)}" + ("" if torch.isfinite(strengths).all() else " with NaN or inf"))
        unknown = sorted(set(edit_options or {}) - {"delta", "n_iter"})
        if unknown:
            raise ValueError(f"edit_options takes x-space guidance's delta and n_iter, got {unknown}")
        self.model = model
        self.k = k
        self.strengths = strengths
        # rounded, so that linspace's 1e-8 in place of 0 reads "+0"; adding 0.0 turns -0.0 into 0.0
        self.labels = [f"γ = {round(g, 4) + 0.0:+g}" for g in strengths.tolist()]
        self.cache_dir = cache_dir
        self.num_steps = num_steps
        self.save_dir = save_dir
        self.edit_options = dict(edit_options or {})
        self._bases: dict[tuple[int, float], tuple[Any, Any]] = {}  # (seed, fraction) → (Sample, LocalBasis)
        self._frames: dict[tuple, list[bytes]] = {}  # (seed, fraction, direction, method) → PNG per strength
        self._strips: dict[tuple, Any] = {}  # same key → (S + 1, C, H, W) images, the original last
        self.computed: list[tuple] = []

        start = int(torch.argmin(strengths.abs()))  # open at the strength nearest 0: the sample itself
        super().__init__("strength", len(strengths), start, what="the edit")
        self.frame_label.value = self.labels[start]
        self.progress.max = 2  # two stages: the sample's basis, then the strip
        t_options = [(f"{f:g} T (t = {self._timestep(f)})", f) for f in t_fractions]
        self.seed = widgets.Dropdown(options=seeds, value=seeds[0], description="sample")
        self.t = widgets.Dropdown(options=t_options, value=t_fractions[0], description="t")
        self.direction = widgets.Dropdown(options=[(f"v{i + 1}", i) for i in range(k)], value=0,
                                          description="direction")
        self.method = widgets.ToggleButtons(options=list(EDIT_METHODS), value=method, description="method")
        condition = condition_label(model)
        self.caption = widgets.Label("left: the sample; right: the edit" + (f" ({condition})" if condition else ""))
        self.save_button = widgets.Button(description="save strip", tooltip="write every strength as one PNG")
        self.saved = widgets.Label("")
        self.save_button.on_click(lambda button: self.save_strip())
        self._start(
            [widgets.HBox([self.seed, self.t]), widgets.HBox([self.direction, self.method]), self.image, self.caption,
             widgets.HBox([self.slider, self.frame_label]), widgets.HBox([self.progress, self.status]),
             widgets.HBox([self.save_button, self.saved])],
            controls=[self.seed, self.t, self.direction, self.method])

    def __len__(self) -> int:
        return len(self.strengths)

    def __repr__(self) -> str:
        condition = condition_label(self.model)
        return (f"EditExplorer({condition + ', ' if condition else ''}{len(self.seed.options)} samples, k={self.k}, "
                f"{len(self)} strengths)")

    def _timestep(self, fraction: float) -> int:
        return timestep_at(self.model, fraction, self.num_steps)

    @property
    def key(self) -> tuple:
        """(seed, t_fraction, direction index, method): what the controls select now."""
        return (self.seed.value, self.t.value, self.direction.value, self.method.value)

    # The live path ---------------------------------------------------------------------------

    def _show(self) -> None:
        self.frame_label.value = self.labels[self.slider.value]
        super()._show()

    def _cached(self, key: tuple) -> bool:
        return key in self._frames

    def _compute(self, key: tuple) -> None:
        seed, fraction, direction, method = key
        if (seed, fraction) not in self._bases:
            self._stage(0, f"sample {seed}: x_t and its top-{self.k} directions at {fraction:g} T …")
            sample = sample_at(self.model, seed, self._timestep(fraction), self.num_steps)
            self._bases[(seed, fraction)] = (sample, sample_basis(self.model, sample, self.k, cache_dir=self.cache_dir))
        sample, basis = self._bases[(seed, fraction)]
        self._stage(1, f"editing along v{direction + 1} ({method}), {len(self)} strengths …")
        # One batch: every strength, and γ = 0 last (the unedited sample, finished the same way).
        gammas = torch.cat([self.strengths, torch.zeros(1)])
        options = self.edit_options if method == "guidance" else {}
        latents = edit(self.model, sample, basis.v[direction], gammas, method=method, **options).detach()
        images = to_pixels(self.model, latents).cpu()  # a latent model's z_0 decoded, for display only
        frames = [to_png(_side_by_side([images[-1], image]), value_range=(-1, 1)) for image in images[:-1]]
        with self._lock:
            self._strips[key] = images
            self._frames[key] = frames
            self.computed.append(key)

    def _display(self, key: tuple) -> None:
        self.image.value = self._frames[key][self.slider.value]
        self.frame_label.value = self.labels[self.slider.value]

    def _busy(self, key: tuple | None) -> None:
        # The worker's hook: _compute reports its own two stages, so only the end is shown here.
        if key is None:
            self._stage(None)

    def _stage(self, stage: int | None, message: str = "") -> None:
        self.progress.value = 0 if stage is None else stage
        self.progress.layout.visibility = "hidden" if stage is None else "visible"
        self.status.value = message

    # Results -----------------------------------------------------------------------------------

    def strip(self) -> torch.Tensor:
        """The current selection's images, (S, C, H, W) in [-1, 1], one per strength (computed if needed);
        for a latent model the decoded pixels D(z_0 / s), (S, *model.image_shape), not the latents."""
        self.wait()
        if self.key not in self._frames:
            self._compute(self.key)
        return self._strips[self.key][:-1]

    def save_strip(self, path: str | os.PathLike | None = None) -> str:
        """Write the current selection's whole strength strip as one PNG; return its path.

        Default path: save_dir/edit-seed{seed}-t{t}-v{i}-{method}.png.
        """
        seed, fraction, direction, method = self.key
        if path is None:
            path = Path(self.save_dir) / f"edit-seed{seed}-t{self._timestep(fraction)}-v{direction + 1}-{method}.png"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_png(_side_by_side(list(self.strip())), value_range=(-1, 1), pixel_size=4))
        self.saved.value = f"saved {path}"
        return str(path)

    def live_config(self) -> dict:
        """What the web book's live explorer needs to compute what this one computes (JSON-ready);
        NotImplementedError for a latent model, which is not exported to the web."""
        self._check_exported()
        defaults = {name: p.default for name, p in inspect.signature(x_space_guidance).parameters.items()
                    if name in ("delta", "n_iter")}
        options = {**defaults, **self.edit_options}
        return {"explorer": "edit", "model": self.model.name, "weights": weights_fingerprint(self.model.unet)[:16],
                "num_steps": self.num_steps, "seeds": list(self.seed.options),
                "t_fractions": [value for _, value in self.t.options], "k": self.k,
                "strengths": self.strengths.tolist(), "strength_index": self.slider.value,
                "method": self.method.value, "delta": float(options["delta"]), "n_iter": int(options["n_iter"]),
                "boost_below": QUALITY_BOOST}

    def to_html(self) -> str:
        """The static player over the strengths of the current selection, for pages without a kernel,
        in a `live_container` with ``live_config()`` (alone for a latent model)."""
        self.strip()  # computes the selection if it is not cached yet
        seed, fraction, direction, method = self.key
        condition = condition_label(self.model)
        title = (f"{condition + '; ' if condition else ''}sample {seed}, t = {self._timestep(fraction)} "
                 f"({fraction:g} T), direction v{direction + 1}, {method}; left: the sample, right: the edit")
        player = static_player(self._frames[self.key], self.labels, title=title, value=self.slider.value)
        return self._page(player)
