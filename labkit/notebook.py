"""The setup every Part II chapter starts with: which model, on which device, how many threads, a clock.

One call replaces the lines each chapter would otherwise repeat::

    lab = setup(MODEL, threads=1)   # MODEL = None: the embedded MNIST DDPM on the CPU
    model, EMBEDDED = lab.model, lab.embedded_mnist

``setup`` is where a chapter's process-wide settings happen, named in the call: torch's number
of threads (``threads``; None leaves it) and, on a GPU, the float32 precision
(``labkit.models.set_fp32_precision``: true float32 unless ``tf32=True``). Nothing else in
labkit changes them.

A chapter's text states the embedded MNIST model's numbers; with another ``MODEL`` it still
runs through. ``lab.expect(holds, claim)`` checks a claim about those numbers (an AssertionError
on the embedded model, a printed note on another), and ``lab.require_embedded_mnist(reason)``
stops a chapter where the rest reads digits (the digit measures, the classifier)::

    lab.expect(low_share > 5 * white_noise_share, "the directions are smoother than white noise")
    lab.require_embedded_mnist("the rest of this chapter measures digits")

Explained in: book/part2-diffusion/03_diffusion.ipynb; expect and require_embedded_mnist in
book/part2-diffusion/07_semantic.ipynb
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from labkit.checks import check_bool, check_int, check_tensor, show
from labkit.models import EMBEDDED_MODELS, DiffusionModel, load_model, set_fp32_precision


@dataclass(frozen=True)
class Setup:
    """A chapter's model and where it runs.

    model: the loaded `DiffusionModel`;  device: where it runs;
    embedded_mnist: whether it is the embedded MNIST model, by what was loaded (None or "mnist"; not
    "shapes", which is embedded too): the digit measures, the classifier and the numbers the
    chapters check are that model's;  started: (time.perf_counter(), time.process_time()) at setup.
    """

    model: DiffusionModel
    device: torch.device
    embedded_mnist: bool
    started: tuple[float, float]

    def elapsed(self) -> tuple[float, float]:
        """(wall-clock seconds, CPU seconds of this process) since setup."""
        return time.perf_counter() - self.started[0], time.process_time() - self.started[1]

    def expect(self, holds: bool | Tensor, claim: str) -> None:
        """Check a claim that the chapter's text makes about the embedded MNIST model's numbers.

        holds: whether it is so, a bool or a one-element bool tensor; claim: the claim, in words.
        On the embedded MNIST model a false claim raises AssertionError (nbval then fails the
        chapter). On another model the text does not describe the numbers: a false claim is
        printed as a note, and the chapter goes on.
        """
        if isinstance(holds, Tensor):
            check_tensor("holds", holds, floating=False, hint="a comparison, e.g. a.mean() > b")
            if holds.dtype != torch.bool or holds.numel() != 1:
                raise TypeError(f"holds must be one truth value, got {show(holds)}; reduce it, e.g. with .all()")
            holds = bool(holds)
        check_bool("holds", holds)
        if not isinstance(claim, str):
            raise TypeError(f"claim must be a str saying what is checked, got {type(claim).__name__} {show(claim)}")
        if not claim.strip():
            raise ValueError("claim is empty; say what is checked, e.g. 'the similarity falls with t'")
        if holds:
            return
        if self.embedded_mnist:
            raise AssertionError(f"the text says that {claim}, and on the embedded MNIST model it does not hold")
        print(f"Note: the text says that {claim} (for the embedded MNIST model); not so on {self.model.name}.")

    def require_embedded_mnist(self, reason: str) -> None:
        """Stop the chapter here (RuntimeError) unless its model is the embedded MNIST model.

        For the point from which a chapter reads digits (labkit.measures, labkit.classifier):
        everything above has run on the chosen model; reason says what follows, in words.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise TypeError(f"reason must be a non-empty str saying what follows, got {show(reason)}")
        if not self.embedded_mnist:
            raise RuntimeError(f"{reason}: that reads the embedded MNIST model's digits only, and this chapter runs "
                               f"{self.model.name}, so it stops here (everything above ran on it). "
                               "Set MODEL = None to run the rest.")


def setup(model: str | os.PathLike | None = None, device: str | torch.device | None = None, *,
          threads: int | None = None, tf32: bool = False) -> Setup:
    """Load a chapter's model and set the process up for it: None is the embedded MNIST DDPM; an
    embedded name ("mnist", "shapes"), a folder or a hub id loads that model.

    device: default "cuda" for a model other than an embedded one when a GPU is there, else "cpu"
    (the embedded models are small: the CPU is the reference the book's numbers were measured on).
    threads: torch.set_num_threads(threads) (small batches on a 2-core CPU run fastest on one or
    two); None leaves torch's setting. tf32: on a GPU, TF32 (True) or true float32 (False, the
    default: the book's 1e-4 checks need it); nothing on a CPU. Both are checked before loading.
    Returns a `Setup` (model, device, embedded_mnist flag, start time).

    Explained in: book/part2-diffusion/03_diffusion.ipynb
    """
    started = (time.perf_counter(), time.process_time())
    if threads is not None:
        check_int("threads", threads, 1, 1024, hint="torch's CPU threads, e.g. 1 for small batches")
    check_bool("tf32", tf32)
    if device is None:
        embedded = model is None or (isinstance(model, str) and model in EMBEDDED_MODELS)
        device = "cuda" if not embedded and torch.cuda.is_available() else "cpu"
    loaded = load_model(model, device=device)
    if threads is not None:
        torch.set_num_threads(threads)
    set_fp32_precision(loaded.device, tf32=tf32)
    # by what was loaded, not by how it was named: setup("mnist") is the embedded model too
    return Setup(model=loaded, device=loaded.device, embedded_mnist=loaded.name == "embedded", started=started)
