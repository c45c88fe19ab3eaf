"""Training the embedded default model, a small DDPM on 5,000 MNIST digits, and its digit classifier.

The model is a ``diffusers.UNet2DModel`` (v-prediction, linear β from 1e-4 to 0.02, T = 1000,
the schedule of Google's DDPM checkpoints) with self-attention in its mid-block, so that h-space
and the forward-mode-AD workarounds are exercised exactly as on the large hub models.

    python -m labkit.train ddpm --out runs/ddpm --steps 28500 --precision bf16 --device cpu

writes resumable checkpoints under ``OUT/checkpoint`` (safetensors + JSON; rerunning the same
command resumes) and, at the end, the EMA weights in diffusers' pipeline layout (``OUT/unet``,
``OUT/scheduler``, ``OUT/model_index.json``), the layout ``labkit.load_model`` and
``DDPMPipeline.from_pretrained`` read.

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
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from labkit.classifier import DigitClassifier
from labkit.data import IMAGE_SIZE, batches, load_digits


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
class TrainConfig:
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


def _resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


def _start_run(device: str, out: str, seed: int) -> tuple[torch.device, Path, torch.Generator]:
    """What both trainings start with: the device, the output folder (created), seeded generators.

    torch.manual_seed seeds the weight initialisation; the returned generator draws the data order
    and noise, so a run is reproducible from ``seed``.
    """
    resolved = _resolve_device(device)  # first: a bad device fails before anything is written
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    return resolved, folder, torch.Generator().manual_seed(seed)


def _save_checkpoint(
    folder: Path, step: int, seconds: float, model, ema: EMAModel, optimizer, lr_sched, gen, config
) -> None:
    """Everything needed to resume, as safetensors + JSON, written atomically (tmp dir, rename)."""
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    shadow = {f"shadow.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)}
    save_file(shadow, tmp / "ema.safetensors")
    opt_state = optimizer.state_dict()
    tensors = {}
    for index, state in opt_state["state"].items():
        for name, value in state.items():
            tensors[f"{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["generator"] = gen.get_state()
    save_file(tensors, tmp / "optimizer.safetensors")
    meta = {
        "step": step,
        "seconds": round(seconds, 1),
        "ema_optimization_step": ema.optimization_step,
        "param_groups": opt_state["param_groups"],
        "lr_scheduler": lr_sched.state_dict(),
        "config": asdict(config),
    }
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        folder.rename(old)
        tmp.rename(folder)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(folder)


def _load_checkpoint(folder: Path, model, ema: EMAModel, optimizer, lr_sched, gen) -> tuple[int, float]:
    """Restore everything `_save_checkpoint` wrote; returns (step, training seconds so far)."""
    model.load_state_dict(load_file(folder / "model.safetensors"))
    shadow = load_file(folder / "ema.safetensors")
    ema.shadow_params = [shadow[f"shadow.{i}"].to(p.device) for i, p in enumerate(ema.shadow_params)]
    meta = json.loads((folder / "state.json").read_text())
    ema.optimization_step = meta["ema_optimization_step"]
    tensors = load_file(folder / "optimizer.safetensors")
    gen.set_state(tensors.pop("generator"))
    state: dict = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    lr_sched.load_state_dict(meta["lr_scheduler"])
    return int(meta["step"]), float(meta.get("seconds", 0.0))


def scene_batches(batch_size: int, gen: torch.Generator, size: int = 32) -> Iterator[Tensor]:
    """Endless batches of fresh scenes (labkit.worlds), (batch_size, 3, size, size) in [-1, 1].

    Each batch's factors are drawn with a seed taken from ``gen``, so a run is reproducible and a
    resumed run continues the stream from the checkpointed generator state.
    """
    from labkit import worlds

    while True:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        yield worlds.render(worlds.sample_factors(batch_size, seed), size=size)


def _saved_prediction(saved: dict) -> str:
    """The prediction a checkpoint was trained with. Checkpoints from before the MNIST model moved to
    v-prediction (2026-12-04) have ``None`` there, which then meant ε for MNIST and v for shapes."""
    if saved.get("prediction"):
        return saved["prediction"]
    return "epsilon" if saved.get("data", "mnist") == "mnist" else "v_prediction"


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
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    if config.prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {config.prediction!r}: "
                         "v_prediction (the shipped models) or epsilon")
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {config.precision!r}: "
                         "fp32 trains in float32, bf16 in mixed precision")
    device, out, gen = _start_run(config.device, config.out, config.seed)

    if config.data not in ("mnist", "shapes"):
        raise ValueError(f"data must be 'mnist' or 'shapes', got {config.data!r}")
    default_config = embedded_unet_config() if config.data == "mnist" else shapes_unet_config()
    model = UNet2DModel(**(config.model_config or default_config)).to(device)
    prediction = config.prediction
    scheduler = ddpm_scheduler(prediction)
    ema = EMAModel(model.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=3 / 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    lr_sched = get_cosine_schedule_with_warmup(optimizer, config.warmup, config.steps)

    start, seconds_before = 0, 0.0
    ckpt = out / "checkpoint"
    if (ckpt / "state.json").exists():
        saved = json.loads((ckpt / "state.json").read_text()).get("config", {})
        saved_prediction = _saved_prediction(saved)
        if saved_prediction != prediction:
            raise ValueError(f"the checkpoint in {ckpt} was trained with prediction={saved_prediction!r}, this run "
                             f"asks for {prediction!r}: pass --prediction {saved_prediction} to resume it, "
                             "or train into a new --out")
        start, seconds_before = _load_checkpoint(ckpt, model, ema, optimizer, lr_sched, gen)
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
            _save_checkpoint(ckpt, step + 1, seconds, model, ema, optimizer, lr_sched, gen, config)

    # Training time over all sessions of a resumed run (checkpoints carry the time so far).
    elapsed = seconds_before + time.perf_counter() - t0
    ema.copy_to(model.parameters())
    DDPMPipeline(unet=model.cpu(), scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    log = {"steps": config.steps, "resumed_from": start, "seconds": round(elapsed, 1), "device": str(device),
           "parameters": sum(p.numel() for p in model.parameters()), "images": n_images,
           "torch": torch.__version__, "config": asdict(config)}
    (out / "training_log.json").write_text(json.dumps(log, indent=1))
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

    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("epochs and batch_size must be positive")
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
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(record, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labkit.train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("ddpm", help="train the embedded DDPM")
    p.add_argument("--out", required=True, help="output folder (rerun to resume)")
    for field in ("steps", "batch_size", "warmup", "seed", "checkpoint_every"):
        p.add_argument("--" + field.replace("_", "-"), type=int, default=getattr(TrainConfig, field))
    for field in ("lr", "ema_decay"):
        p.add_argument("--" + field.replace("_", "-"), type=float, default=getattr(TrainConfig, field))
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--data", default="mnist", choices=("mnist", "shapes"),
                   help="mnist: the 5,000 digits; shapes: scenes of labkit.worlds rendered on the fly")
    p.add_argument("--prediction", default=TrainConfig.prediction, choices=PREDICTIONS,
                   help="what the U-Net predicts (default: v_prediction, as both shipped models)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="bf16: mixed precision, 1.55x faster on a 2-core CPU with AVX512-BF16 (default fp32)")
    c = sub.add_parser("classifier", help="train the digit classifier that judges samples")
    c.add_argument("--out", required=True, help="output folder (config.json, model.safetensors)")
    for field in ("epochs", "batch_size", "max_shift", "seed"):
        c.add_argument("--" + field.replace("_", "-"), type=int, default=getattr(ClassifierConfig, field))
    for field in ("lr", "weight_decay", "heldout_fraction"):
        c.add_argument("--" + field.replace("_", "-"), type=float, default=getattr(ClassifierConfig, field))
    c.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k != "what"}
    if args.what == "ddpm":
        print(train_ddpm(TrainConfig(**fields)))
    else:
        out = train_classifier(ClassifierConfig(**fields))
        heldout = json.loads((out / "config.json").read_text())["heldout"]
        print(f"{out}: held-out accuracy {heldout['accuracy']:.2%} on {heldout['images']} digits")


if __name__ == "__main__":
    main()
