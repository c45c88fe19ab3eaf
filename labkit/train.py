"""Training the embedded default model, a small DDPM on 5,000 MNIST digits, and its digit classifier.

The model is a ``diffusers.UNet2DModel`` (v-prediction, linear β from 1e-4 to 0.02, T = 1000,
the schedule of Google's DDPM checkpoints) with self-attention in its mid-block, so that h-space
and the forward-mode-AD workarounds are exercised exactly as on the large hub models.

    python -m labkit.train ddpm --out runs/ddpm --steps 28500 --precision bf16 --device cpu

writes resumable checkpoints under ``OUT/checkpoint`` (safetensors + JSON, one unit written by
``labkit.files.atomic_folder``: a kill at any moment leaves a checkpoint the next run reads;
rerunning the same command resumes, refusing options that would not continue the same run) and,
at the end, the EMA weights in diffusers' pipeline layout (``OUT/unet``,
``OUT/scheduler``, ``OUT/model_index.json``), the layout ``labkit.load_model`` and
``DDPMPipeline.from_pretrained`` read; ``OUT/unet`` is written as one unit with its manifest
(``atomic_folder``), so a kill during the export leaves the previous weights or the new ones.

    python -m labkit.train ddpm --data shapes --out runs/shapes --steps 21000 --device cpu

trains the same way on 32×32 colour scenes of ``labkit.worlds``, rendered on the fly.

Both models predict v = √ᾱ ε − √(1−ᾱ) x₀ (Salimans & Ho 2022), not ε: an ε-model's
x̂₀ = (x − √(1−ᾱ) ε̂)/√ᾱ multiplies ε's error by up to 1/√ᾱ_T ≈ 160 at t = T, and unclipped DDIM
from pure noise then drifts (on the shapes model, after 1,280 ε steps, to saturated, object-less
colours); v's x̂₀ = √ᾱ x − √(1−ᾱ) v̂ has no such factor. On MNIST the same recipe took the share
of confidently classified samples from 75.2% (ε, 3,500 steps) to 86.5% (v, 28,500 steps).
``--prediction epsilon`` trains an ε-model.

    python -m labkit.train classifier --out labkit/embedded/classifier

trains the small digit classifier (labkit.classifier) that judges the model's samples.

Explained in: book/part2-diffusion/03_diffusion.ipynb (and the model card, labkit/embedded/README.md)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from labkit.checkpoint import CHECKPOINT_FILES, check_resume, load_checkpoint, save_checkpoint
from labkit.checks import check_choice, check_float, check_int, check_own_folder, device_arg, float_arg, int_arg, show
from labkit.classifier import CLASSIFIER_FILES, DigitClassifier
from labkit.data import IMAGE_SIZE, batches, load_digits
from labkit.files import atomic_folder, atomic_write, complete_folder, write_json
from labkit.models import UNET_FILES, resolve_device


def embedded_unet_config() -> dict:
    """Architecture of the embedded model: 28×28×1 → three levels (32, 64, 64 channels).

    Two 2× downsamplings take 28×28 to 7×7; the mid-block (ResNet, self-attention, ResNet)
    runs at 7×7 with 64 channels, so h = mid-block output has 64·7·7 = 3,136 numbers and
    x_t has 784. About 1.06 M parameters; one forward pass takes ~12 ms on 2 CPU cores.
    """
    return dict(
        sample_size=IMAGE_SIZE,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=32,
    )


def shapes_unet_config() -> dict:
    """Architecture of the shapes model: 32×32×3 scenes (labkit.worlds) → three levels (32, 64, 64 channels).

    The embedded model's architecture with 3 colour channels at 32×32: the mid-block runs at
    8×8 with 64 channels, so h has 64·8·8 = 4,096 numbers and x_t has 3,072.
    """
    return dict(embedded_unet_config(), sample_size=32, in_channels=3, out_channels=3)


PREDICTIONS = ("epsilon", "v_prediction")
PRECISIONS = ("fp32", "bf16")
MAX_BATCH, MAX_STEPS = 4096, 10**7


def ddpm_scheduler(prediction_type: str = "v_prediction") -> DDPMScheduler:
    """The training noise schedule: linear β from 1e-4 to 0.02 over T = 1000 steps; ε- or v-prediction."""
    if prediction_type not in PREDICTIONS:
        raise ValueError(f"prediction_type must be one of {PREDICTIONS}, got {prediction_type!r}")
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type=prediction_type,
        clip_sample=True,
    )


@dataclass
class TrainConfig:  # the bounds of each field: check_train_config
    out: str
    steps: int = 28500  # the shipped model (labkit/embedded/README.md)
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 250
    limit: int | None = None  # train on the first `limit` digits only (tests)
    model_config: dict | None = None  # UNet2DModel arguments; None: the data's default (tests pass a tiny one)
    data: str = "mnist"  # "mnist": the 5,000 digits; "shapes": scenes of labkit.worlds rendered on the fly
    prediction: str = "v_prediction"  # or "epsilon"
    precision: str = "fp32"  # "bf16": the U-Net's forward and backward in bfloat16 (see train_ddpm)


def check_train_config(config: TrainConfig) -> TrainConfig:
    """Check every field of a DDPM training config before any work, naming the field, the value and the fix."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(config.out, str | os.PathLike) or str(config.out) == "":
        raise ValueError(f"out must be a folder path, got {show(config.out)}")
    check_int("steps", config.steps, 1, MAX_STEPS)
    check_int("batch_size", config.batch_size, 1, MAX_BATCH, hint="64 trains the shipped models")
    check_float("lr", config.lr, 0.0, 1.0, low_open=True, hint="the shipped models use 2e-3")
    check_int("warmup", config.warmup, 0, MAX_STEPS)
    check_float("ema_decay", config.ema_decay, 0.0, 1.0, high_open=True, hint="a decay in [0, 1), e.g. 0.999")
    check_int("seed", config.seed, 0, 2**63 - 1)
    check_int("checkpoint_every", config.checkpoint_every, 1, MAX_STEPS)
    if config.limit is not None:
        check_int("limit", config.limit, 1)
    if config.model_config is not None and not isinstance(config.model_config, dict):
        raise TypeError(f"model_config must be a dict of UNet2DModel arguments or None (the default), "
                        f"got {show(config.model_config)}")
    check_choice("data", config.data, ("mnist", "shapes"))
    check_choice("prediction", config.prediction, PREDICTIONS)
    check_choice("precision", config.precision, PRECISIONS)
    resolve_device(config.device)
    return config


def check_ddpm_run(config: TrainConfig) -> Path:
    """Everything checked before a DDPM training run starts; returns its checkpoint folder.

    The config's bounds; a checkpoint to resume must be complete and continue the same run; an
    OUT without one must not hold another model's unet/ (the export would overwrite it).
    """
    check_train_config(config)
    ckpt = Path(config.out) / "checkpoint"
    if complete_folder(ckpt, CHECKPOINT_FILES) is not None:
        check_resume(ckpt, config)
    elif (Path(config.out) / "unet").exists():
        raise FileExistsError(f"{str(Path(config.out) / 'unet')!r} holds a model that this run did not train (there "
                              f"is no checkpoint in {str(ckpt)!r} to resume): train into a new --out, or delete "
                              "that unet/ folder to replace it")
    return ckpt


def _start_run(device: str, out: str, seed: int) -> tuple[torch.device, Path, torch.Generator]:
    """What both trainings start with: the device, the output folder (created), seeded generators.

    torch.manual_seed seeds the weight initialisation; the returned generator draws the data order
    and noise, so a run is reproducible from ``seed``.
    """
    resolved = resolve_device(device)  # first: a bad device fails before anything is written
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    return resolved, folder, torch.Generator().manual_seed(seed)


def scene_batches(batch_size: int, gen: torch.Generator, size: int = 32) -> Iterator[Tensor]:
    """Endless batches of fresh scenes (labkit.worlds), (batch_size, 3, size, size) in [-1, 1].

    Each batch's factors are drawn with a seed taken from ``gen``, so a run is reproducible and a
    resumed run continues the stream from the checkpointed generator state.
    """
    from labkit import worlds

    while True:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        yield worlds.render(worlds.sample_factors(batch_size, seed), size=size)


def train_ddpm(config: TrainConfig) -> Path:
    """Train the embedded DDPM; returns the output folder (pipeline layout, EMA weights).

    Loss: E_{x0, t, ε} ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖², t uniform in 0..T−1 (for v-prediction
    the target is v = √ᾱ_t ε − √(1−ᾱ_t) x0 instead of ε).
    Deterministic given ``config.seed`` on a given device and torch build.

    ``precision="bf16"`` runs the U-Net under ``torch.autocast`` in bfloat16 (mixed precision:
    the weights, the optimiser, the EMA and the loss stay float32). On a 2-core CPU with
    AVX512-BF16 a step of the embedded model (batch 64) takes 0.35 s against 0.54 s in float32,
    1.55× faster (``benchmarks/train_step.py``); without bfloat16 instructions expect no gain.
    """
    ckpt = check_ddpm_run(config)
    device, out, gen = _start_run(config.device, config.out, config.seed)

    default_config = embedded_unet_config() if config.data == "mnist" else shapes_unet_config()
    model = UNet2DModel(**(config.model_config or default_config)).to(device)
    prediction = config.prediction
    scheduler = ddpm_scheduler(prediction)
    ema = EMAModel(model.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=3 / 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    lr_sched = get_cosine_schedule_with_warmup(optimizer, config.warmup, config.steps)

    start, seconds_before = 0, 0.0
    if ckpt.exists():
        start, seconds_before = load_checkpoint(ckpt, model, ema, optimizer, lr_sched, gen)
        print(f"resuming from step {start}")

    if config.data == "mnist":
        images, _ = load_digits(limit=config.limit)
        n_images: int | str = len(images)
        data = batches(images, config.batch_size, gen)
    else:
        n_images, data = "rendered on the fly", scene_batches(config.batch_size, gen, model.config.sample_size)
    # A resumed run continues from the saved generator state: statistically the same run,
    # though not bit-identical batches (a fresh permutation is drawn at resume).
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    t0 = time.perf_counter()
    progress = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="training DDPM")
    for step in progress:
        x0 = next(data).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen).to(device)
        abar = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        target = noise if prediction == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * x0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            predicted = model(xt, t).sample
        loss = torch.nn.functional.mse_loss(predicted.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_sched.step()
        ema.step(model.parameters())
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            seconds = seconds_before + time.perf_counter() - t0
            save_checkpoint(ckpt, step + 1, seconds, model, ema, optimizer, lr_sched, gen, config)

    # Training time over all sessions of a resumed run (checkpoints carry the time so far).
    elapsed = seconds_before + time.perf_counter() - t0
    ema.copy_to(model.parameters())
    # the pipeline layout DDPMPipeline.save_pretrained writes, but unet/ as one unit (a kill during
    # the export leaves the old unet/ or the new one, never half its weights) and each file atomically
    pipeline = DDPMPipeline(unet=model.cpu(), scheduler=scheduler)
    with atomic_folder(out / "unet", UNET_FILES) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    with atomic_write(out / "scheduler" / "scheduler_config.json") as tmp:
        tmp.write_text(scheduler.to_json_string())
    with atomic_write(out / "model_index.json") as tmp:
        tmp.write_text(pipeline.to_json_string())
    log = {"steps": config.steps, "resumed_from": start, "seconds": round(elapsed, 1), "device": str(device),
           "parameters": sum(p.numel() for p in model.parameters()), "images": n_images,
           "torch": torch.__version__, "config": asdict(config)}
    write_json(out / "training_log.json", log)
    return out


@dataclass
class ClassifierConfig:
    out: str
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 2  # augmentation: random moves of up to this many pixels
    heldout_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"
    limit: int | None = None  # train on the first `limit` digits only (tests)


def check_classifier_config(config: ClassifierConfig) -> ClassifierConfig:
    """Check a classifier training config before any work (OUT is replaced as a whole: it must hold no other files)."""
    if not isinstance(config.out, str | os.PathLike) or str(config.out) == "":
        raise ValueError(f"out must be a folder path, got {show(config.out)}")
    check_own_folder("out", Path(config.out), CLASSIFIER_FILES)
    check_int("epochs", config.epochs, 1, 10_000)
    check_int("batch_size", config.batch_size, 1, MAX_BATCH)
    check_float("lr", config.lr, 0.0, 1.0, low_open=True)
    check_float("weight_decay", config.weight_decay, 0.0, 1.0)
    check_int("max_shift", config.max_shift, 0, 8)
    check_float("heldout_fraction", config.heldout_fraction, 0.0, 1.0, low_open=True, high_open=True)
    check_int("seed", config.seed, 0, 2**63 - 1)
    if config.limit is not None:
        check_int("limit", config.limit, 10)
    resolve_device(config.device)
    return config


def heldout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_index, heldout_index) of n items: a seeded permutation, its first ⌈fraction·n⌉ held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"heldout_fraction must be between 0 and 1, got {fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_heldout = max(1, int(round(fraction * n)))
    return order[n_heldout:], order[:n_heldout]


def _random_shifts(images: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Move each image by up to ``max_shift`` pixels along each axis, background filling in.

    MNIST digits are centred by their centre of mass; generated ones are only roughly centred,
    and the classifier must not care.
    """
    if max_shift == 0:
        return images
    padded = torch.nn.functional.pad(images, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE] for i, (dy, dx) in enumerate(offsets)])


def train_classifier(config: ClassifierConfig) -> Path:
    """Train the digit classifier (labkit.classifier) with cross-entropy; returns the output folder.

    Holds out ``heldout_fraction`` of the digits (`heldout_split`) and records the accuracy on
    them, and the share classified with confidence ≥ 0.9, in ``OUT/config.json`` next to
    ``OUT/model.safetensors``. ``labkit.classifier.load_classifier(OUT)`` loads it.
    """
    from labkit.classifier import classify

    check_classifier_config(config)
    device, out, gen = _start_run(config.device, config.out, config.seed)

    images, labels = load_digits(limit=config.limit)
    train_index, heldout_index = heldout_split(len(labels), config.heldout_fraction, config.seed)
    batch_size = min(config.batch_size, len(train_index))
    steps_per_epoch = len(train_index) // batch_size
    model = DigitClassifier().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    lr_sched = get_cosine_schedule_with_warmup(optimizer, 0, config.epochs * steps_per_epoch)

    t0 = time.perf_counter()
    progress = tqdm(range(config.epochs), desc="training classifier")
    for _ in progress:
        order = train_index[torch.randperm(len(train_index), generator=gen)]
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            batch = order[start : start + batch_size]
            x = _random_shifts(images[batch], config.max_shift, gen).to(device)
            loss = torch.nn.functional.cross_entropy(model(x), labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_sched.step()
        progress.set_postfix(loss=f"{loss.item():.4f}")
    elapsed = time.perf_counter() - t0

    model = model.cpu().eval()
    heldout = classify(images[heldout_index], model)
    record = {
        "architecture": {"channels": list(model.channels), "parameters": sum(p.numel() for p in model.parameters())},
        "heldout": {
            "images": len(heldout_index),
            "accuracy": round((heldout.label == labels[heldout_index]).float().mean().item(), 4),
            "share_confident_0.9": round((heldout.confidence >= 0.9).float().mean().item(), 4),
        },
        "training": {"images": len(train_index), "seconds": round(elapsed, 1), "device": str(device),
                     "torch": torch.__version__, "config": asdict(config)},
    }
    with atomic_folder(out, CLASSIFIER_FILES) as tmp:  # the weights and their record, together
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(record, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sd"]:  # the text-conditioned miniature has flags of its own (labkit.train_sd)
        from labkit.train_sd import main as train_sd_main

        return train_sd_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m labkit.train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("sd", help="train the shapes miniature of Stable Diffusion (python -m labkit.train sd --help)")
    p = sub.add_parser("ddpm", help="train the embedded DDPM")
    p.add_argument("--out", required=True, help="output folder (rerun to resume)")
    for field, kind in (("steps", int_arg(1, MAX_STEPS)), ("batch_size", int_arg(1, MAX_BATCH)),
                        ("warmup", int_arg(0, MAX_STEPS)), ("seed", int_arg(0, 2**63 - 1)),
                        ("checkpoint_every", int_arg(1, MAX_STEPS)), ("lr", float_arg(0.0, 1.0, low_open=True)),
                        ("ema_decay", float_arg(0.0, 1.0, high_open=True))):
        p.add_argument("--" + field.replace("_", "-"), type=kind, default=getattr(TrainConfig, field))
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda")
    p.add_argument("--data", default="mnist", choices=("mnist", "shapes"),
                   help="mnist: the 5,000 digits; shapes: scenes of labkit.worlds rendered on the fly")
    p.add_argument("--prediction", default=TrainConfig.prediction, choices=PREDICTIONS,
                   help="what the U-Net predicts (default: v_prediction, as both shipped models)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="bf16: mixed precision, 1.55x faster on a 2-core CPU with AVX512-BF16 (default fp32)")
    c = sub.add_parser("classifier", help="train the digit classifier that judges samples")
    c.add_argument("--out", required=True, help="output folder (config.json, model.safetensors)")
    for field, kind in (("epochs", int_arg(1, 10_000)), ("batch_size", int_arg(1, MAX_BATCH)),
                        ("max_shift", int_arg(0, 8)), ("seed", int_arg(0, 2**63 - 1)),
                        ("lr", float_arg(0.0, 1.0, low_open=True)), ("weight_decay", float_arg(0.0, 1.0)),
                        ("heldout_fraction", float_arg(0.0, 1.0, low_open=True, high_open=True))):
        c.add_argument("--" + field.replace("_", "-"), type=kind, default=getattr(ClassifierConfig, field))
    c.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    fields = {k: str(v) if k == "device" else v for k, v in vars(args).items() if k != "what"}
    config = TrainConfig(**fields) if args.what == "ddpm" else ClassifierConfig(**fields)
    try:  # everything that can be checked before any work, as usage errors
        check_ddpm_run(config) if args.what == "ddpm" else check_classifier_config(config)
    except (ValueError, TypeError, FileExistsError) as err:
        parser.error(f"argument --out: {err}" if isinstance(err, FileExistsError) else str(err))
    if args.what == "ddpm":
        print(train_ddpm(config))
    else:
        out = train_classifier(config)
        heldout = json.loads((out / "config.json").read_text())["heldout"]
        print(f"{out}: held-out accuracy {heldout['accuracy']:.2%} on {heldout['images']} digits")


if __name__ == "__main__":
    main()
