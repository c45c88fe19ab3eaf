"""labkit: the Riemannian geometry of diffusion-model latent spaces, small enough to read.

One module per idea, named as in the book:

- ``labkit.geometry``  toy manifolds and maps, Jacobians, pullback metrics, curves, geodesics,
  parallel transport, lerp and slerp (Part I)
- ``labkit.spectral``  the local basis: implicit SVD of a Jacobian by JVPs and VJPs (Part I, ch. 5)
- ``labkit.diffusion`` loading models, h-space, DDIM sampling and inversion (Part II)
- ``labkit.editing``   x-space guidance, naive edits, transport between samples, interpolation
- ``labkit.measures``  digit moments (slant, thickness, width, ink) to score directions
- ``labkit.widgets``   the edit and interpolation explorers
- ``labkit.plot``      figures the book reuses
- ``labkit.data``      the MNIST digits the embedded model is trained on
- ``labkit.train``     training the embedded model and its digit classifier
- ``labkit.checks``    the input checks every public function runs first (one place, one style)
- ``labkit.cache``     content keys (weights fingerprint) for the basis cache; ``labkit.hub``: the hub with a deadline
"""

from labkit import data, diffusion, editing, geometry, plot, spectral
from labkit.diffusion import h_space, load_model
from labkit.geometry import lerp, pullback_metric, slerp
from labkit.spectral import LocalBasis, local_basis

__all__ = ["data", "diffusion", "editing", "geometry", "plot", "spectral", "h_space", "load_model", "lerp", "slerp",
           "pullback_metric", "LocalBasis", "local_basis"]
