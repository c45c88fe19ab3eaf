"""The setup every Part II chapter starts with: which model, on which device, and a clock.

One call replaces the lines each chapter would otherwise repeat::

    lab = setup(MODEL)     # MODEL = None: the embedded MNIST DDPM on the CPU
    model = lab.model

``setup`` changes no process-wide state; a chapter sets torch's threads and GPU precision in its
own visible lines (``torch.set_num_threads``, ``labkit.models.set_fp32_precision``).

Explained in: book/part2-diffusion/03_diffusion.ipynb
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from labkit.models import EMBEDDED_MODELS, DiffusionModel, load_model


@dataclass(frozen=True)
class Setup:
    """A chapter's model and where it runs.

    model: the loaded `DiffusionModel`;  device: where it runs;
    embedded: whether it is the embedded MNIST model (the digit measures, the classifier and the
    checked numbers are that model's);  started: (time.perf_counter(), time.process_time()) at setup.
    """

    model: DiffusionModel
    device: torch.device
    embedded: bool
    started: tuple[float, float]

    def elapsed(self) -> tuple[float, float]:
        """(wall-clock seconds, CPU seconds of this process) since setup."""
        return time.perf_counter() - self.started[0], time.process_time() - self.started[1]


def setup(model: str | os.PathLike | None = None, device: str | torch.device | None = None) -> Setup:
    """Load a chapter's model: None is the embedded MNIST DDPM; a folder or hub id loads that model.

    device: default "cuda" for a model other than an embedded one when a GPU is there, else "cpu"
    (the embedded models are small: the CPU is the reference the book's numbers were measured on).
    ``embedded`` is true exactly when the loaded model is the embedded MNIST model (None or "mnist").
    Returns a `Setup` (model, device, embedded flag, start time).

    Explained in: book/part2-diffusion/03_diffusion.ipynb
    """
    started = (time.perf_counter(), time.process_time())
    if device is None:
        embedded = model is None or (isinstance(model, str) and model in EMBEDDED_MODELS)
        device = "cuda" if not embedded and torch.cuda.is_available() else "cpu"
    loaded = load_model(model, device=device)
    # by what was loaded, not by how it was named: setup("mnist") is the embedded model too
    return Setup(model=loaded, device=loaded.device, embedded=loaded.name == "embedded", started=started)
