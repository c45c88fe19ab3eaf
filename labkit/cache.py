"""Keys for caching results by content: a cached local basis is reused only for the same weights,
the same latent, the same dtype and the same options, never because two models share a name.

A model's key is a SHA-256 fingerprint of its state dict (names, dtypes, shapes and bytes). It is
computed once per model object and recomputed when any weight was changed in place since.

Explained in: book/part2-diffusion/05_editing.ipynb (the basis cache of ``sample_basis``)
"""

from __future__ import annotations

import hashlib
import json
import weakref

import torch
from torch import Tensor

# module → (version counters of its tensors, fingerprint); weak, so a cached model can still be freed
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tensor_digest(tensor: Tensor, digest: hashlib._Hash | None = None) -> hashlib._Hash:
    """SHA-256 over a tensor's dtype, shape and bytes (added to ``digest`` if given)."""
    digest = digest or hashlib.sha256()
    digest.update(f"{tensor.dtype}:{tuple(tensor.shape)}:".encode())
    digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A hex SHA-256 of ``module``'s state dict: equal exactly when names, dtypes, shapes and
    values all agree. Cached per module object; a tensor's version counter (which every in-place
    change bumps) tells when the cached value is stale."""
    state = module.state_dict()
    versions = tuple(t._version for t in state.values())
    cached = _FINGERPRINTS.get(module)
    if cached is not None and cached[0] == versions:
        return cached[1]
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        tensor_digest(tensor, digest)
    fingerprint = digest.hexdigest()
    _FINGERPRINTS[module] = (versions, fingerprint)
    return fingerprint


def content_key(**parts: object) -> tuple[str, str]:
    """(the parts as canonical JSON, its SHA-256 in hex). Tensors enter by their digest."""
    canonical = {name: tensor_digest(value).hexdigest() if isinstance(value, Tensor) else value
                 for name, value in parts.items()}
    text = json.dumps(canonical, sort_keys=True, default=repr)
    return text, hashlib.sha256(text.encode()).hexdigest()
