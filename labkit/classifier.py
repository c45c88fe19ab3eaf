"""A small digit classifier, the judge of what the embedded model draws.

Trained by ``python -m labkit.train classifier --out DIR`` on 90% of the same 5,000 MNIST digits
as the diffusion model (the other 10% measure its accuracy). Three 3×3 convolutions
(16, 32, 64 channels, ReLU, 2×2 max-pooling after each: 28 → 14 → 7 → 3) and one linear layer
to the 10 classes: about 29,000 parameters. The trained one ships in
``labkit/embedded/classifier`` (config.json + model.safetensors).

Explained in: labkit/embedded/README.md (the model card) and book/part2-diffusion/03_diffusion.ipynb
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from labkit.checks import check_instance, check_int, check_path, check_tensor, check_weights
from labkit.data import IMAGE_SIZE, NUM_CLASSES
from labkit.files import verified_folder

EMBEDDED_CLASSIFIER = Path(__file__).parent / "embedded" / "classifier"
CLASSIFIER_FILES = ("model.safetensors", "config.json")


class DigitClassifier(nn.Module):
    """CNN from (N, 1, 28, 28) images in [-1, 1] to (N, 10) logits."""

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        if not isinstance(channels, tuple | list) or len(channels) != 3:
            raise ValueError(f"channels must be three positive ints, got {channels!r}")
        channels = tuple(check_int(f"channels[{i}]", c, 1, 4096) for i, c in enumerate(channels))
        self.channels = tuple(channels)
        layers: list[nn.Module] = []
        previous = 1
        for c in channels:
            layers += [nn.Conv2d(previous, c, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            previous = c
        self.features = nn.Sequential(*layers)
        side = IMAGE_SIZE // 2 // 2 // 2  # 28 → 14 → 7 → 3
        self.head = nn.Linear(previous * side * side, NUM_CLASSES)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images).flatten(1))


def load_classifier(path: str | Path | None = None) -> DigitClassifier:
    """The trained classifier in ``path`` (default: the shipped one), on CPU, in eval mode.

    ``path`` is a folder written by ``python -m labkit.train classifier --out DIR``:
    config.json (architecture and training record) and model.safetensors, with the manifest
    that ``labkit.files.atomic_folder`` writes (checked here: a truncated or changed file is
    refused by name; the shipped folder must have it). A folder from before manifests is read
    when both files are there.
    """
    folder = check_path("path", path) if path is not None else EMBEDDED_CLASSIFIER
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    # finishes a write a kill interrupted; refuses files changed since they were written
    if verified_folder("path", folder, CLASSIFIER_FILES, "train the classifier again: python -m labkit.train "
                       "classifier --out DIR", shipped=folder.resolve() == EMBEDDED_CLASSIFIER.resolve()) is None:
        raise FileNotFoundError(
            f"no classifier in {folder} (needs config.json and model.safetensors); "
            "train one with: python -m labkit.train classifier --out DIR"
        )
    try:
        model = DigitClassifier(tuple(json.loads(config_file.read_text())["architecture"]["channels"]))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(config_file)!r} is not a classifier's record ({type(err).__name__}: {err}); "
                         "train the classifier again: python -m labkit.train classifier --out DIR") from err
    try:
        model.load_state_dict(load_file(weights_file))
    except Exception as err:  # safetensors and torch raise their own types for a damaged or foreign file
        raise ValueError(f"{str(weights_file)!r} does not hold this classifier's weights ({type(err).__name__}: "
                         f"{str(err)[:200]}); it is damaged or belongs to another architecture: train the "
                         "classifier again") from err
    check_weights(str(weights_file), model, {})  # none NaN or infinite
    return model.eval()


@functools.cache
def _load_once(folder: Path) -> DigitClassifier:
    # classify's default: read from disk once per process and folder, not on every call
    return load_classifier(folder)


@dataclass(frozen=True)
class DigitPrediction:
    label: Tensor  # (N,) int64      the most probable digit
    confidence: Tensor  # (N,)       its probability
    probabilities: Tensor  # (N, 10) softmax of the logits


@torch.no_grad()
def classify(images: Tensor, classifier: DigitClassifier | None = None, batch_size: int = 500) -> DigitPrediction:
    """Classify (N, 1, 28, 28) images in [-1, 1] (default classifier: the shipped one, loaded once).

    Returns the most probable digit (N,), its probability (N,) and all probabilities (N, 10).

    Explained in: book/part2-diffusion/05_editing.ipynb
    """
    check_tensor("images", images, shape=(None, 1, IMAGE_SIZE, IMAGE_SIZE),
                 hint="digits in [-1, 1]; one image: images[None]")
    check_int("batch_size", batch_size, 1)
    if classifier is not None:
        check_instance("classifier", classifier, DigitClassifier, hint="load_classifier(), or None for the shipped one")
    model = classifier if classifier is not None else _load_once(EMBEDDED_CLASSIFIER)
    device = next(model.parameters()).device
    logits = torch.cat([model(chunk.to(device)).cpu() for chunk in images.float().split(batch_size)])
    probabilities = logits.softmax(dim=1)
    confidence, label = probabilities.max(dim=1)
    return DigitPrediction(label=label, confidence=confidence, probabilities=probabilities)
