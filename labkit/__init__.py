"""labkit: the Riemannian geometry of diffusion-model latent spaces, small enough to read.

One module per idea, named as in the book:

- ``labkit.geometry``   toy manifolds and maps, Jacobians, pullback metrics, curves, geodesics,
  parallel transport, lerp and slerp (Part I)
- ``labkit.spectral``   the local basis: implicit SVD of a Jacobian by JVPs and VJPs (Part I, ch. 5)
- ``labkit.krylov``     the solver behind it: thick-restart block Lanczos, linear algebra in float64
- ``labkit.power``      block power iteration (Park et al.'s method) and a port of their code, to compare
- ``labkit.plot``       figures the book reuses: surfaces, tangent vectors, metric ellipses, image grids
- ``labkit.models``     loading diffusion models (embedded, folder, hub id, or a bare U-Net), GPU precision
- ``labkit.diffusion``  h-space, Tweedie's x̂₀, DDIM sampling and inversion, samples at timestep t (Part II)
- ``labkit.linearity``  how far the first-order prediction holds: r(ε) along a direction, the step ε* where it breaks
- ``labkit.dimension``  the data manifold's dimension from the model's score (Stanczuk et al.'s normal-space SVD)
- ``labkit.latent``     text-conditioned latent diffusion (Stable Diffusion 1.x/2.x) as a model bound to a prompt
- ``labkit.analysis``   local bases over many samples and timesteps as a job (torchrun for many ranks)
- ``labkit.editing``    x-space guidance, naive edits, transport between samples, interpolation
- ``labkit.hspace``     edits made in H itself (Asyrp/Haas): an offset on the mid-block output, h's PCA
- ``labkit.notebook``   the setup every Part II chapter starts with (model, device, timing)
- ``labkit.measures``   digit moments (slant, thickness, width, ink) to score directions
- ``labkit.classifier`` the digit classifier that judges the embedded model's samples
- ``labkit.widgets``    the edit and interpolation explorers (a package: one explorer per module)
- ``labkit.data``       the MNIST digits the embedded model is trained on
- ``labkit.train``      training the embedded model, its digit classifier, and the shapes model
- ``labkit.checkpoint`` resumable training state, written as one unit and resumed only by the same run
- ``labkit.train_sd``   training the shapes miniature of Stable Diffusion (VAE, text encoder, conditional U-Net)
- ``labkit.sd_layout``  the miniature's parts and the folder they are saved in, a real SD checkpoint's layout
- ``labkit.worlds``     a world with known factors: RGB scenes rendered from seven numbers
- ``labkit.readout``    the factor read-out, a small CNN that reads a scene's factors back
- ``labkit.captions``   the shapes world in words: captions from factors, read back, and their tokenizer
- ``labkit.budget``     edits of one size: each edit scaled to change the finished image by a budget
- ``labkit.scoring``    scoring directions against measured factors (response, disentanglement, side effects)
- ``labkit.oracle``     directions known to move one factor (M⁺e_j, the ceiling) and LOCO-Edit's masked directions
- ``labkit.disentanglement`` metrics of a response matrix: top-factor share, top-two gap, coverage, DCI
- ``labkit.stats``      per-sample statistics: bootstrap intervals, paired differences, Holm's correction
- ``labkit.checks``     the input checks every public function runs first (one place, one style)
- ``labkit.cache``      content keys (weights fingerprint, dtype, options) for the basis cache
- ``labkit.files``      atomic writes: a file, or a folder of files with a manifest; a kill never leaves half
- ``labkit.hub``        the Hugging Face Hub probe, with one deadline

Part I needs only torch: ``import labkit`` and ``import labkit.geometry`` do not import diffusers.
The Part II modules, and the shortcuts ``labkit.load_model`` and ``labkit.h_space``, are imported
on first use (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import importlib

from labkit import geometry, spectral
from labkit.geometry import lerp, pullback_metric, slerp
from labkit.spectral import LocalBasis, local_basis

_SUBMODULES = ("analysis", "budget", "cache", "captions", "checkpoint", "checks", "classifier", "data", "diffusion",
               "editing", "files", "hspace", "hub", "latent", "measures", "models", "notebook", "plot", "readout",
               "scoring", "sd_layout", "train", "train_sd", "widgets", "worlds", "dimension", "disentanglement",
               "linearity", "oracle", "stats")
_SHORTCUTS = {"load_model": "models", "h_space": "diffusion"}

__all__ = ["geometry", "spectral", *_SUBMODULES, *_SHORTCUTS, "lerp", "slerp", "pullback_metric", "LocalBasis",
           "local_basis"]


def __getattr__(name: str):
    # Imported on first use, so that Part I (geometry, spectral) never pays for diffusers.
    if name in _SUBMODULES:
        return importlib.import_module(f"labkit.{name}")
    if name in _SHORTCUTS:
        return getattr(importlib.import_module(f"labkit.{_SHORTCUTS[name]}"), name)
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")
