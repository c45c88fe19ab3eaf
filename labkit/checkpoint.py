"""Resumable training state: a checkpoint written as one unit, read back only to continue the same run.

A checkpoint (OUT/checkpoint) holds the U-Net's weights, the EMA's shadow weights, the optimiser's
state and the data generator's state (safetensors) and state.json (the step, the training time so
far, the EMA and learning-rate schedule state and the run's config). ``save_checkpoint`` writes it
with ``labkit.files.atomic_folder``, so a kill at any moment leaves a complete checkpoint (the old
or the new one) with a manifest that is checked on reading. ``check_resume`` refuses to continue a
checkpoint with options that would make it another run (another learning rate, data or seed...),
or with fewer steps than it has already trained.

Explained in: labkit/embedded/README.md (the model card: how to train on from the shipped checkpoint)
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from labkit.checks import check_float, check_int, check_path
from labkit.files import atomic_folder

CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json")
# a resumed run continues the same run: these options must be the checkpoint's (steps, precision,
# device and checkpoint_every may change; a longer --steps stretches the cosine, see the model card)
SAME_ON_RESUME = ("data", "lr", "batch_size", "warmup", "ema_decay", "seed", "model_config", "limit")


def _check_config(config: object) -> None:
    if not is_dataclass(config) or isinstance(config, type) or not hasattr(config, "steps"):
        raise TypeError(f"config must be the run's TrainConfig (a dataclass instance), got {type(config).__name__}")


def _check_state(model: object, ema: object, optimizer: object, lr_sched: object, gen: object) -> None:
    """The objects a checkpoint is saved from or restored into, by type (before any file is touched)."""
    for name, value, kind in (("model", model, torch.nn.Module), ("ema", ema, EMAModel),
                              ("optimizer", optimizer, torch.optim.Optimizer), ("gen", gen, torch.Generator)):
        if not isinstance(value, kind):
            raise TypeError(f"{name} must be a {kind.__module__}.{kind.__name__}, got {type(value).__name__}")
    if not (callable(getattr(lr_sched, "state_dict", None)) and callable(getattr(lr_sched, "load_state_dict", None))):
        raise TypeError(f"lr_sched must be a learning-rate scheduler (state_dict, load_state_dict), "
                        f"got {type(lr_sched).__name__}")


def saved_prediction(saved: dict) -> str:
    """The prediction a checkpoint was trained with. Checkpoints from before the MNIST model moved to
    v-prediction (2026-12-04) have ``None`` there, which then meant ε for MNIST and v for shapes.

    saved: the run's config as state.json records it (a dict)."""
    if not isinstance(saved, dict):
        raise TypeError(f"saved must be the config a checkpoint's state.json records (a dict), got "
                        f"{type(saved).__name__}")
    if saved.get("prediction"):
        return saved["prediction"]
    return "epsilon" if saved.get("data", "mnist") == "mnist" else "v_prediction"


def check_resume(ckpt: Path, config) -> None:
    """Refuse to resume the checkpoint in ``ckpt`` with a TrainConfig that would not continue the same
    run: another value of a SAME_ON_RESUME field or of the prediction, or fewer steps than it has."""
    ckpt = check_path("ckpt", ckpt)
    _check_config(config)
    if not (ckpt / "state.json").is_file():
        raise FileNotFoundError(f"ckpt: {str(ckpt)!r} holds no state.json, so it is not a checkpoint to resume; "
                                "give OUT/checkpoint of a training run")
    try:
        state = json.loads((ckpt / "state.json").read_text())
        saved, step = state.get("config", {}), int(state["step"])
        if not isinstance(saved, dict):
            raise TypeError(f"its config is a {type(saved).__name__}, not a dict")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{str(ckpt / 'state.json')!r} is unreadable ({type(err).__name__}: {err}); "
                         "the checkpoint is damaged: train into a new --out") from err
    asked = json.loads(json.dumps(asdict(config)))  # as the checkpoint stores it (tuples as lists)
    differ = [field for field in SAME_ON_RESUME if field in saved and saved[field] != asked[field]]
    if differ:
        was = ", ".join(f"{field}={saved[field]!r}" for field in differ)
        now = ", ".join(f"{field}={asked[field]!r}" for field in differ)
        flags = " ".join(f"--{field.replace('_', '-')} {saved[field]}" for field in differ)
        raise ValueError(f"the checkpoint in {ckpt} (step {step}) was trained with {was}; this run asks for {now}: "
                         f"pass {flags} to resume it, or train into a new --out")
    if saved_prediction(saved) != config.prediction:
        raise ValueError(f"the checkpoint in {ckpt} was trained with prediction={saved_prediction(saved)!r}, this run "
                         f"asks for {config.prediction!r}: pass --prediction {saved_prediction(saved)} to resume it, "
                         "or train into a new --out")
    if config.steps < step:
        raise ValueError(f"steps={config.steps} is below the checkpoint's step {step} in {ckpt}: nothing would be "
                         f"trained; pass --steps {step} or more to resume it (equal: export it as it is)")


def save_checkpoint(folder: Path, step: int, seconds: float, model: torch.nn.Module, ema: EMAModel,
                    optimizer: torch.optim.Optimizer, lr_sched, gen: torch.Generator, config) -> None:
    """Everything needed to resume, as safetensors + JSON, written as one unit (labkit.files.atomic_folder).

    config: the run's TrainConfig (a dataclass), recorded in state.json.
    """
    folder = check_path("folder", folder)
    check_int("step", step, 0)
    check_float("seconds", seconds, 0.0, hint="the training time so far")
    _check_state(model, ema, optimizer, lr_sched, gen)
    _check_config(config)
    opt_state = optimizer.state_dict()
    tensors = {f"{index}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
               for index, state in opt_state["state"].items() for name, value in state.items()}
    tensors["generator"] = gen.get_state()
    meta = {"step": step, "seconds": round(seconds, 1), "ema_optimization_step": ema.optimization_step,
            "param_groups": opt_state["param_groups"], "lr_scheduler": lr_sched.state_dict(), "config": asdict(config)}
    with atomic_folder(folder, CHECKPOINT_FILES) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        save_file({f"shadow.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                  tmp / "ema.safetensors")
        save_file(tensors, tmp / "optimizer.safetensors")
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))


def load_checkpoint(folder: Path, model: torch.nn.Module, ema: EMAModel, optimizer: torch.optim.Optimizer, lr_sched,
                    gen: torch.Generator) -> tuple[int, float]:
    """Restore everything ``save_checkpoint`` wrote into the given objects; returns (step, training seconds so far).

    A file that does not fit them (another architecture) or is damaged raises ValueError naming the folder.
    """
    folder = check_path("folder", folder)
    _check_state(model, ema, optimizer, lr_sched, gen)
    try:
        return _read_checkpoint(folder, model, ema, optimizer, lr_sched, gen)
    except Exception as err:  # safetensors, torch and json raise their own types for a damaged or foreign file
        raise ValueError(f"cannot resume from {str(folder)!r}: {type(err).__name__}: {str(err)[:300]}; it belongs "
                         "to another model or is damaged: train into a new --out") from err


def _read_checkpoint(folder: Path, model, ema: EMAModel, optimizer, lr_sched, gen) -> tuple[int, float]:
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
