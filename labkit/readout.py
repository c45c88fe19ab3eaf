"""The factor read-out: a small CNN that reads a scene's factors (labkit.worlds) back from its image.

It turns any image of the world, a render or a diffusion model's sample, into factors, so that
edits can be measured in the world's own units. Outputs, per image:

- a circular factor (a hue h ∈ [0, 1)): the point (cos 2πh, sin 2πh) on the unit circle, read back
  as ĥ = atan2(sin, cos)/2π mod 1 (no seam at 0 ≡ 1);
- a continuous factor v ∈ [low, high]: z = (v − mid)/half-span ∈ [−1, 1], read back and clamped
  to the range (so read factors can always be re-rendered);
- the categorical shape: logits, read back as the arg-max.

Trained on renders drawn afresh every step (no fixed data set, so no over-fitting), with a
little Gaussian pixel noise (σ uniform in [0, 0.05]) so that it tolerates a sample's grain:

    python -m labkit.readout --out labkit/embedded/shapes/readout

The score on held-out renders (``readout_scores``): R² = 1 − Σ(v̂ − v)²/Σ(v − v̄)² for a continuous
factor; for a hue, the same with circular differences d(a, b) = ((a − b + ½) mod 1) − ½ and v̄ the
circular mean, R² = 1 − Σ d(ĥ, h)²/Σ d(h, h̄)²; accuracy for the shape.

Explained in: book/part2-diffusion/08_known_factors.ipynb
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from labkit.checks import (
    check_float,
    check_instance,
    check_int,
    check_out_dir,
    check_own_folder,
    check_tensor,
    check_weights,
    float_arg,
    int_arg,
    out_dir_arg,
    show,
)
from labkit.files import atomic_folder, verified_folder
from labkit.worlds import FACTORS, IMAGE_SIZE, check_factors, render, sample_factors

EMBEDDED_READOUT = Path(__file__).parent / "embedded" / "shapes" / "readout"
READOUT_FILES = ("config.json", "model.safetensors")
# read_factors: renders are in [-1, 1]; a model's samples and noisy renders stray a little past it,
# but an image beyond ±PIXEL_LIMIT is not an image of the world in this range (0..255? unscaled?)
PIXEL_LIMIT = 3.0


def _output_slices() -> dict[str, slice]:
    """Where each factor's outputs sit in the network's output vector (2 for a hue, 1, or one per class)."""
    slices, start = {}, 0
    for name, f in FACTORS.items():
        width = {"circular": 2, "continuous": 1, "categorical": len(f.values)}[f.kind]
        slices[name] = slice(start, start + width)
        start += width
    return slices


OUTPUTS = max(s.stop for s in _output_slices().values())  # D: the network's outputs per image


class FactorReadout(nn.Module):
    """CNN from (N, 3, 32, 32) images in [-1, 1] to (N, D) raw outputs (D = 12: see ``_output_slices``).

    Four 3×3 convolutions (channels c1..c4; the last three with stride 2: 32 → 16 → 8 → 4), each
    followed by batch norm and ReLU, then a hidden linear layer and the output layer.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), hidden: int = 128):
        super().__init__()
        if not isinstance(channels, tuple | list) or len(channels) != 4:
            raise ValueError(f"channels must be four positive ints, got {show(channels)}")
        channels = tuple(check_int(f"channels[{i}]", c, 1, 4096) for i, c in enumerate(channels))
        self.channels, self.hidden = channels, check_int("hidden", hidden, 1, 65536)
        layers: list[nn.Module] = []
        previous = 3
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(previous, c, 3, stride=1 if i == 0 else 2, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
            previous = c
        self.features = nn.Sequential(*layers)
        side = IMAGE_SIZE // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(previous * side * side, hidden), nn.ReLU(),
                                  nn.Linear(hidden, OUTPUTS))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def _check_outputs(outputs: object) -> Tensor:
    """The network's raw outputs, (N, D) with D = OUTPUTS, finite."""
    return check_tensor("outputs", outputs, shape=(None, OUTPUTS),
                        hint=f"the read-out's raw outputs (N, {OUTPUTS}), network(images)")


def encode(factors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Training targets: (N, 2) (cos, sin) of 2πh for hues, (N,) z ∈ [−1, 1] for continuous, (N,) classes."""
    check_factors(factors)
    out = {}
    for name, f in FACTORS.items():
        v = factors[name]
        if f.kind == "circular":
            out[name] = torch.stack([torch.cos(2 * math.pi * v), torch.sin(2 * math.pi * v)], dim=1)
        elif f.kind == "continuous":
            out[name] = (v - (f.high + f.low) / 2) / ((f.high - f.low) / 2)
        else:
            out[name] = v
    return out


def decode(outputs: Tensor) -> dict[str, Tensor]:
    """Raw outputs (N, D) → factors {name: (N,)} valid for ``labkit.worlds.render``."""
    _check_outputs(outputs)
    out = {}
    for name, s in _output_slices().items():
        f, o = FACTORS[name], outputs[:, s]
        if f.kind == "circular":
            out[name] = torch.remainder(torch.atan2(o[:, 1], o[:, 0]) / (2 * math.pi), 1.0)
        elif f.kind == "continuous":
            out[name] = ((f.high + f.low) / 2 + o[:, 0] * (f.high - f.low) / 2).clamp(f.low, f.high)
        else:
            out[name] = o.argmax(dim=1)
    return out


def smooth_factors(outputs: Tensor) -> Tensor:
    """Raw outputs (N, D) → (N, 7) coordinates of the factors that are smooth in the image, for gradients:
    each hue's angle in turns (not wrapped; differences are what count), each continuous factor
    unclamped, and for the shape the margin of the next shape's logit over the read one's
    (positive: the read-out would call it the next shape). Columns in FACTORS order."""
    _check_outputs(outputs)
    columns = []
    for name, s in _output_slices().items():
        f, o = FACTORS[name], outputs[:, s]
        if f.kind == "circular":
            columns.append(torch.atan2(o[:, 1], o[:, 0]) / (2 * math.pi))
        elif f.kind == "continuous":
            columns.append((f.high + f.low) / 2 + o[:, 0] * (f.high - f.low) / 2)
        else:
            read = o.argmax(dim=1, keepdim=True)
            columns.append((o.gather(1, (read + 1) % o.shape[1]) - o.gather(1, read))[:, 0])
    return torch.stack(columns, dim=1)


def readout_loss(outputs: Tensor, targets: dict[str, Tensor]) -> Tensor:
    """Sum over factors: squared error of (cos, sin) and of z, cross-entropy of the shape.

    outputs: (N, D) raw outputs; targets: ``encode(factors)`` of the same N scenes."""
    _check_outputs(outputs)
    if not isinstance(targets, dict) or set(targets) != set(FACTORS) \
            or any(not isinstance(v, Tensor) or len(v) != len(outputs) for v in targets.values()):
        raise ValueError(f"targets must be encode(factors) of the {len(outputs)} scenes, {{name: tensor}} for every "
                         f"factor of {list(FACTORS)}, got {show(targets)}")
    loss = outputs.new_zeros(())
    for name, s in _output_slices().items():
        o, y = outputs[:, s], targets[name]
        if FACTORS[name].kind == "categorical":
            loss = loss + nn.functional.cross_entropy(o, y)
        else:
            loss = loss + ((o - y.reshape(o.shape)) ** 2).sum(1).mean()
    return loss


def load_readout(path: str | Path | None = None) -> FactorReadout:
    """The trained read-out in ``path`` (default: the shipped one), on CPU, in eval mode.

    ``path`` is a folder written by ``python -m labkit.readout --out DIR``: config.json
    (architecture, training record, held-out scores) and model.safetensors, with the manifest that
    ``labkit.files.atomic_folder`` writes (checked here; the shipped folder must have it).
    """
    if path is not None and not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a folder (str or pathlib.Path) or None, got {type(path).__name__} {show(path)}")
    folder = Path(path) if path is not None else EMBEDDED_READOUT
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    # finishes a write a kill interrupted; refuses files changed since they were written
    if verified_folder("path", folder, READOUT_FILES, "train the read-out again: python -m labkit.readout --out DIR",
                       shipped=folder.resolve() == EMBEDDED_READOUT.resolve()) is None:
        raise FileNotFoundError(f"no read-out in {str(folder)!r} (needs config.json and model.safetensors); "
                                "train one with: python -m labkit.readout --out DIR")
    try:
        architecture = json.loads(config_file.read_text())["architecture"]
        model = FactorReadout(tuple(architecture["channels"]), architecture["hidden"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(config_file)!r} is not a read-out's record ({type(err).__name__}: {err}); "
                         "train the read-out again: python -m labkit.readout --out DIR") from err
    try:
        weights = load_file(weights_file)
    except Exception as err:  # safetensors raises its own types for a damaged file
        raise ValueError(f"{str(weights_file)!r} is not readable ({type(err).__name__}: {str(err)[:200]}); it is "
                         "truncated or damaged: train the read-out again") from err
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # tensors of other shapes
        missing, unexpected = [str(err).split("\n")[1].strip()[:120]], []
    if missing or unexpected:
        example = show((missing + unexpected)[:2])
        raise ValueError(f"{str(weights_file)!r} does not fit the architecture in config.json ({len(missing)} missing "
                         f"or mismatched, {len(unexpected)} unexpected tensors, e.g. {example}); the two files come "
                         "from different read-outs: train the read-out again")
    check_weights(str(weights_file), model, {})  # none NaN or infinite
    return model.eval()


@torch.no_grad()
def read_factors(images: Tensor, network: FactorReadout | None = None, batch_size: int = 500) -> dict[str, Tensor]:
    """Read the factors of (N, 3, 32, 32) images in [-1, 1]: {name: (N,)}, with ``network`` (a
    FactorReadout; default: the shipped one, ``load_readout()``).

    Refuses images that are not floating point, hold NaN or inf, or reach beyond ±PIXEL_LIMIT
    (0..255 pixels, say): the read-out would return normal-looking factors for them.
    """
    hint = "renders of labkit.worlds or samples of the shapes model, in [-1, 1]"
    check_tensor("images", images, shape=(None, 3, IMAGE_SIZE, IMAGE_SIZE), hint=hint)
    if len(images) == 0:
        raise ValueError(f"images is empty ({show(images)}); give at least one image")
    largest = float(images.abs().max())
    if largest > PIXEL_LIMIT:
        raise ValueError(f"images reach {largest:.4g}, far outside [-1, 1]; scale them to [-1, 1] first "
                         "(pixels in 0..255: labkit.data.to_unit_range; an edit's output: .clamp(-1, 1))")
    if network is not None:
        check_instance("network", network, FactorReadout, hint="load_readout(), or None for the shipped one")
    batch_size = check_int("batch_size", batch_size, 1, 100_000)
    model = network if network is not None else load_readout()
    device = next(model.parameters()).device
    outputs = torch.cat([model(chunk.to(device)).cpu() for chunk in images.float().split(batch_size)])
    return decode(outputs)


def circular_difference(a: Tensor, b: Tensor) -> Tensor:
    """d(a, b) = ((a − b + ½) mod 1) − ½ ∈ [−½, ½): the signed shortest way round the unit-length circle.

    a, b: hues (tensors of shapes that broadcast together)."""
    check_tensor("a", a, hint="hues in [0, 1)")
    check_tensor("b", b, hint="hues in [0, 1)")
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(f"a and b must have shapes that broadcast together, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}") from None
    return torch.remainder(a - b + 0.5, 1.0) - 0.5


def circular_mean(h: Tensor) -> Tensor:
    """The circular mean of hues in [0, 1): the angle of the mean of the points (cos 2πh, sin 2πh)."""
    check_tensor("h", h, hint="hues in [0, 1)")
    if h.numel() == 0:
        raise ValueError("h is empty: the circular mean of no hues is undefined; give at least one hue")
    angle = torch.atan2(torch.sin(2 * math.pi * h).mean(), torch.cos(2 * math.pi * h).mean())
    return torch.remainder(angle / (2 * math.pi), 1.0)


def readout_scores(read: dict[str, Tensor], true: dict[str, Tensor]) -> dict[str, float]:
    """R² per continuous factor (circular for hues, see the module docstring), accuracy for the shape.

    read, true: factor tables {name: (n,)} of the same n ≥ 2 scenes (each valid for ``labkit.worlds.render``).
    """
    lengths = []
    for name, table in (("read", read), ("true", true)):
        try:
            lengths.append(check_factors(table))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{name}: {err}") from None
    if lengths[0] != lengths[1] or lengths[1] < 2:
        raise ValueError(f"read and true must hold the same n ≥ 2 scenes (R² needs a spread), got {lengths[0]} and "
                         f"{lengths[1]}: read the factors of the very images whose true factors you pass")
    scores = {}
    for name, f in FACTORS.items():
        r, t = read[name], true[name]
        if f.kind == "categorical":
            scores[name] = (r == t).double().mean().item()
            continue
        r, t = r.double(), t.double()
        if f.kind == "circular":
            error, spread = circular_difference(r, t), circular_difference(t, circular_mean(t))
        else:
            error, spread = r - t, t - t.mean()
        scores[name] = 1 - (error**2).sum().item() / (spread**2).sum().item()
    return scores


def train_readout(out: str | Path, steps: int = 2500, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                  heldout: int = 2000, max_noise: float = 0.05) -> dict:
    """Train a read-out on fresh renders; write OUT/model.safetensors and OUT/config.json; return the record.

    AdamW, learning rate warmed up over min(100, steps/10) steps, then a cosine decay to 0; every
    step renders a new batch from a seed drawn from a generator seeded with ``seed``. Held out:
    ``heldout`` renders of sample_factors(heldout, seed=10**6 + seed) (continuous factors, so no
    training scene repeats them), scored by ``readout_scores``.
    """
    check_int("steps", steps, 1, 10**6)
    check_int("batch_size", batch_size, 1, 4096, hint="64 trained the shipped read-out")
    check_float("lr", lr, 0.0, 1.0, low_open=True, hint="3e-3 trained the shipped read-out")
    check_int("seed", seed, 0, 2**31 - 1)
    check_int("heldout", heldout, 2, 16_384)
    check_float("max_noise", max_noise, 0.0, 1.0, high_open=True)
    out = check_own_folder("out", check_out_dir("out", out), READOUT_FILES)  # it is replaced as a whole
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = FactorReadout()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    lr_sched = get_cosine_schedule_with_warmup(optimizer, min(100, steps // 10), steps)
    t0 = time.perf_counter()
    for step in range(steps):
        factors = sample_factors(batch_size, int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        images = render(factors)
        noise = max_noise * torch.rand(batch_size, 1, 1, 1, generator=gen)
        images = images + noise * torch.randn(images.shape, generator=gen)
        loss = readout_loss(model(images), encode(factors))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_sched.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"the loss is {loss.item()} at step {step + 1} with lr={lr:g}: training diverged "
                                     f"and nothing was written to {str(out)!r}; train again with a smaller lr")
        if step % 100 == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f} s", flush=True)
    elapsed = time.perf_counter() - t0
    model.eval()
    true = sample_factors(heldout, seed=10**6 + seed)
    scores = readout_scores(read_factors(render(true), model), true)
    record = {
        "architecture": {"channels": list(model.channels), "hidden": model.hidden,
                         "parameters": sum(p.numel() for p in model.parameters())},
        "heldout": {"renders": heldout, "seed": 10**6 + seed, "scores": {k: round(v, 5) for k, v in scores.items()}},
        "training": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "max_noise": max_noise,
                     "seconds": round(elapsed, 1), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    check_weights(f"the read-out trained with lr={lr:g}", model, {}, FloatingPointError)  # never write NaN weights
    with atomic_folder(out, READOUT_FILES) as tmp:  # the weights and their record, together or not at all
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labkit.readout", description="train the factor read-out")
    parser.add_argument("--out", type=out_dir_arg, required=True,
                        help="output folder (config.json, model.safetensors; replaced as a whole, so it must hold "
                             "nothing else)")
    parser.add_argument("--steps", type=int_arg(1, 10**6), default=2500)
    parser.add_argument("--batch-size", type=int_arg(1, 4096), default=64)
    parser.add_argument("--lr", type=float_arg(0.0, 1.0, low_open=True), default=3e-3)
    parser.add_argument("--seed", type=int_arg(0, 2**31 - 1), default=0)
    args = parser.parse_args(argv)
    try:
        check_own_folder("out", args.out, READOUT_FILES)
    except FileExistsError as err:
        parser.error(f"argument --out: {err}")
    record = train_readout(args.out, args.steps, args.batch_size, args.lr, args.seed)
    print(json.dumps(record["heldout"], indent=1))


if __name__ == "__main__":
    main()
