"""Input checks, in one place and one style, for every public function and the command line.

Each check runs before any work, raises TypeError for a wrong type and ValueError for a wrong
value or shape, and its message names the parameter, the value given and what to do. Each
returns the checked value, so a call site is one line: ``k = check_int("k", k, 1, 50)``.

For argparse, ``int_arg``, ``float_arg``, ``device_arg``, ``file_arg`` and ``out_dir_arg`` wrap the same checks
as ``type=`` functions, so a bad flag is a usage error (exit 2) that argparse prefixes with the
flag's name.

Explained in: book/part2-diffusion/03_diffusion.ipynb (where labkit's functions are first used on a model)
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor


def show(value: object) -> str:
    """A short description of a value for an error message (tensors by shape and dtype)."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype}, {value.device.type})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fix(hint: str) -> str:
    return f"; {hint}" if hint else ""


def _number(name: str, value: object, kind: type, hint: str) -> object:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an int" if kind is numbers.Integral else "a number"
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {show(value)}{_fix(hint)}")
    return value


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    return (("(" if low_open else "[") + ("-inf" if low is None else f"{low:g}") + ", "
            + ("inf" if high is None else f"{high:g}") + (")" if high_open else "]"))


def check_int(name: str, value: object, low: int | None = None, high: int | None = None, hint: str = "") -> int:
    """value as an int in low..high (inclusive; None: unbounded). bool is not an int here."""
    value = int(_number(name, value, numbers.Integral, hint))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{'-inf' if low is None else low}..{'inf' if high is None else high}"
        raise ValueError(f"{name} must be in {bounds} (an int), got {value}{_fix(hint)}")
    return value


def check_float(name: str, value: object, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, finite: bool = True, hint: str = "") -> float:
    """value as a float in the interval given (open or closed ends); NaN is always refused."""
    value = float(_number(name, value, numbers.Real, hint))
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a finite number, got {value}{_fix(hint)}")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        raise ValueError(f"{name} must be in {_interval(low, high, low_open, high_open)}, got {value:g}{_fix(hint)}")
    return value


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {show(value)}")
    return value


def check_choice(name: str, value: object, choices: Sequence) -> object:
    if not isinstance(value, str | int) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {show(value)}")
    return value


def check_callable(name: str, value: object, hint: str = "") -> Callable:
    if not callable(value):
        raise TypeError(f"{name} must be a function, got {type(value).__name__} {show(value)}{_fix(hint)}")
    return value


def check_instance(name: str, value: object, kind: type, hint: str = "") -> object:
    """value, if it is an instance of the class ``kind`` (a labkit model, a result type)."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__} {show(value)}{_fix(hint)}")
    return value


def _shape_matches(shape: tuple, spec: tuple) -> bool:
    """spec: ints and None (any size); a leading ... matches any number of leading dimensions."""
    if spec and spec[0] is Ellipsis:
        spec = spec[1:]
        if len(shape) < len(spec):
            return False
        shape = shape[len(shape) - len(spec):]
    return len(shape) == len(spec) and all(s is None or s == n for n, s in zip(shape, spec))


def _spec_text(spec: tuple) -> str:
    return "(" + ", ".join("..." if s is Ellipsis else "any" if s is None else str(s) for s in spec) + ")"


def check_tensor(name: str, value: object, *, shape: tuple | None = None, ndim: int | None = None,
                 floating: bool = True, finite: bool = True, like: Tensor | None = None, hint: str = "") -> Tensor:
    """value as a torch.Tensor: of ``shape`` (ints, None for any size, a leading ... for any batch
    dimensions) or ``ndim`` dimensions, floating point, finite, and with ``like``'s dtype and
    device when given. ``finite=False`` skips the one check that reads the data (so it can run
    inside torch.func.vmap)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__} {show(value)}; "
                        f"wrap it with torch.as_tensor(...){_fix(hint)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}; use .float() or .double()"
                        f"{_fix(hint)}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}{_fix(hint)}")
    if shape is not None and not _shape_matches(tuple(value.shape), tuple(shape)):
        raise ValueError(f"{name} must have shape {_spec_text(tuple(shape))}, got {tuple(value.shape)}{_fix(hint)}")
    if like is not None and (value.dtype != like.dtype or value.device != like.device):
        raise TypeError(f"{name} must be {like.dtype} on {like.device} like the point it goes with, got "
                        f"{value.dtype} on {value.device}; use .to(x){_fix(hint)}")
    if finite and value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values ({show(value)}); check how it was computed"
                         f"{_fix(hint)}")
    return value


def check_nonzero(name: str, value: Tensor, hint: str = "") -> Tensor:
    """A tensor that is not all zeros (a direction needs a length)."""
    if not bool(value.abs().max() > 0):
        raise ValueError(f"{name} is zero ({show(value)}): it has no direction{_fix(hint)}")
    return value


def check_path(name: str, path: object) -> Path:
    """A path (str or os.PathLike, not empty) as a Path; nothing is read or created."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a path (str or pathlib.Path), got {type(path).__name__} {show(path)}")
    if str(path) == "":
        raise ValueError(f"{name} is the empty path (it would mean the current folder); give a path")
    return Path(path)


def check_folder(name: str, path: object) -> Path:
    """A path (``check_path``) that is not an existing file: a folder, or nothing there yet."""
    path = check_path(name, path)
    if path.is_file():
        raise NotADirectoryError(f"{name}: {str(path)!r} is a file, not a folder; give a folder "
                                 "(a new or existing one)")
    return path


def check_file(name: str, path: object) -> Path:
    """An existing, readable file."""
    path = check_path(name, path)
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "not found"
        raise FileNotFoundError(f"{name}: {str(path)!r} is {what}; give the path of an existing file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{name}: {str(path)!r} is not readable; check its permissions")
    return path


def check_out_dir(name: str, path: object) -> Path:
    """A folder we can write into: created if missing, then proven by writing a probe file."""
    if not isinstance(path, str | os.PathLike) or str(path) == "":
        raise TypeError(f"{name} must be a folder path (str or pathlib.Path), got {show(path)}")
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise PermissionError(f"{name}: cannot write into {str(path)!r} ({err.strerror or err}); "
                              "choose a folder you can write to") from err
    return path


def check_own_folder(name: str, path: Path, own: Sequence[str]) -> Path:
    """A folder that is replaced as a whole (``labkit.files.atomic_folder``): refuse one that holds
    files other than ``own`` (they would be lost), before any work."""
    path = check_folder(name, path)
    foreign = sorted(p.name for p in path.iterdir() if p.name not in {*own, "manifest.json"}) if path.is_dir() else []
    if foreign:
        raise FileExistsError(f"{name}: {str(path)!r} holds other files ({show(foreign)}) that writing "
                              f"{', '.join(own)} there would delete; choose an empty or new folder")
    return path


def check_weights(source: str, unet: torch.nn.Module, info: dict, error: type[Exception] = ValueError) -> None:
    """Refuse weights loaded from ``source`` that do not fill the model exactly (``info``: the
    loading report of diffusers' from_pretrained(output_loading_info=True)), or hold NaN or inf."""
    problems = [f"{len(info[key])} {key.replace('_keys', '')} (e.g. {show(sorted(map(str, info[key]))[:2])})"
                for key in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(key)]
    if problems:
        raise error(
            f"{source!r}: the weights do not match the U-Net's config: {'; '.join(problems)} tensors. "
            "The file is incomplete or belongs to another model: download or save it again."
        )
    weights = {name: t for name, t in unet.state_dict().items() if t.is_floating_point()}
    # one fused norm per tensor (fast): finite exactly when no entry is NaN, inf or beyond ~1e19
    norms = torch._foreach_norm(list(weights.values()))
    bad = [name for name, norm in zip(weights, norms) if not bool(torch.isfinite(norm))]
    if bad:
        raise error(
            f"{source!r}: {len(bad)} weight tensors hold NaN, inf or overflowing values (e.g. {bad[0]!r}); "
            "the model would sample NaN. The training run diverged or the file is damaged: use an earlier checkpoint."
        )


# --------------------------------------------------------------------------------------------
# argparse type= functions: the same checks, as usage errors


def _as_usage_error(check: Callable, text: str) -> object:
    try:
        return check(text)
    except (TypeError, ValueError, OSError) as err:
        # argparse prefixes "argument --flag: "; the check's own name for the value is dropped
        raise argparse.ArgumentTypeError(str(err).removeprefix("value ").removeprefix("value: ")) from None


def int_arg(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        def check(s: str) -> int:
            try:
                number = int(s)
            except ValueError:
                raise ValueError(f"value must be an int, got {s!r}") from None
            return check_int("value", number, low, high)
        return _as_usage_error(check, text)
    parse.__name__ = "int"
    return parse


def float_arg(low: float | None = None, high: float | None = None, *, low_open: bool = False,
              high_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        def check(s: str) -> float:
            try:
                number = float(s)
            except ValueError:
                raise ValueError(f"value must be a number, got {s!r}") from None
            return check_float("value", number, low, high, low_open=low_open, high_open=high_open)
        return _as_usage_error(check, text)
    parse.__name__ = "float"
    return parse


def device_arg(text: str) -> torch.device:
    """A device this torch can use (labkit.models.resolve_device), as a usage error otherwise."""
    from labkit.models import resolve_device  # here: labkit.models imports this module

    try:
        return resolve_device(text)
    except (ValueError, RuntimeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def file_arg(text: str) -> Path:
    return _as_usage_error(lambda s: check_file("value", s), text)


def out_dir_arg(text: str) -> Path:
    return _as_usage_error(lambda s: check_out_dir("value", s), text)
