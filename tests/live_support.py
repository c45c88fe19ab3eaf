"""Shared by the live-explorer tests and benchmarks/live_explorers.py: a bare page that holds live
explorers as the book's pages do (a labkit static player in a live container, and the loader), served
from a folder with the book's own book/_static/live/ (its JavaScript and the generated models).

The explorers' settings are those of the chapters (EDIT_05 is chapter 05's edit explorer), built with
the same labkit function the explorers use, `labkit.widgets.player.live_container`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from labkit.widgets.player import live_container, static_player, to_png

REPO = Path(__file__).resolve().parent.parent
LIVE = REPO / "book" / "_static" / "live"
MANIFEST = LIVE / "generated" / "manifest.json"


def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def edit_config(model: str = "embedded", num_steps: int = 25, seeds=(0, 1, 2, 3), t_fractions=(0.6, 0.8, 1.0),
                k: int = 4, strengths=None, n_iter: int = 16) -> dict:
    """An edit explorer's live_config(), as labkit.widgets.EditExplorer writes it (defaults: chapter 05's)."""
    strengths = torch.linspace(-0.6, 0.6, 7) if strengths is None else torch.as_tensor(strengths, dtype=torch.float32)
    return {"explorer": "edit", "model": model, "weights": manifest()["models"][model]["weights"],
            "num_steps": num_steps, "seeds": list(seeds), "t_fractions": list(t_fractions), "k": k,
            "strengths": strengths.tolist(), "strength_index": int(strengths.abs().argmin()), "method": "guidance",
            "delta": 1.0, "n_iter": n_iter, "boost_below": 0.2}


def interpolation_config(model: str = "embedded", num_steps: int = 20, seed_a: int = 0, seed_b: int = 1,
                         t_fraction: float = 1.0, n: int = 9) -> dict:
    """An interpolation explorer's live_config() (defaults: chapter 06's setting)."""
    return {"explorer": "interpolation", "model": model, "weights": manifest()["models"][model]["weights"],
            "num_steps": num_steps, "t_fraction": t_fraction, "seed_a": seed_a, "seed_b": seed_b, "n": n,
            "methods": ["lerp", "slerp"]}


def harness(folder: Path, configs: list[dict], live: Path = LIVE) -> Path:
    """Write folder/index.html with one explorer per config (a two-frame static player inside each),
    and copy the live folder (default: the book's) to folder/_static/live. Returns the page."""
    if not (live / "generated" / "manifest.json").is_file():
        raise FileNotFoundError(f"no {live / 'generated' / 'manifest.json'}: run `make live` "
                                "(python scripts/export_onnx.py) first")
    shutil.copytree(live, folder / "_static" / "live", dirs_exist_ok=True)
    frames = [to_png(np.full((8, 8), level)) for level in (0.2, 0.8)]
    body = "\n".join(live_container(config, static_player(frames, ["a", "b"], title=f"explorer {i}"))
                     for i, config in enumerate(configs))
    page = folder / "index.html"
    page.write_text(f'<!doctype html><html><head><meta charset="utf-8">'
                    f'<script type="module" src="_static/live/live.js"></script></head><body>{body}</body></html>')
    return page
