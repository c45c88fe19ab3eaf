"""labkit.readout: the shipped factor read-out reads fresh renders back to their factors."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from labkit.readout import (
    EMBEDDED_READOUT,
    circular_difference,
    decode,
    encode,
    load_readout,
    read_factors,
    readout_scores,
    train_readout,
)
from labkit.readout import main as readout_main
from labkit.scoring import rerender_error, world_instrument
from labkit.worlds import CONTINUOUS, FACTORS, render, sample_factors


def encoded_outputs(factors):
    """The raw outputs a perfect read-out would give: the training targets, with one-hot shape logits."""
    columns = []
    for name, f in FACTORS.items():
        y = encode(factors)[name]
        if f.kind == "categorical":
            y = torch.nn.functional.one_hot(y, len(f.values)).float()
        columns.append(y.reshape(len(y), -1))
    return torch.cat(columns, dim=1)


def test_encode_decode_round_trip():
    f = sample_factors(200, seed=7)
    back = decode(encoded_outputs(f))
    for name in CONTINUOUS:
        d = circular_difference(back[name], f[name]) if FACTORS[name].kind == "circular" else back[name] - f[name]
        assert d.abs().max() < 1e-5, name
    assert torch.equal(back["shape"], f["shape"])


def test_circular_r2_is_one_when_exact_and_zero_for_the_circular_mean():
    f = sample_factors(4000, seed=8)
    assert all(v == pytest.approx(1.0) for v in readout_scores(f, f).values())
    guess = dict(f)
    for name in CONTINUOUS:
        if FACTORS[name].kind == "circular":
            angle = torch.atan2(torch.sin(2 * math.pi * f[name]).mean(), torch.cos(2 * math.pi * f[name]).mean())
            guess[name] = torch.full_like(f[name], float(angle) / (2 * math.pi) % 1.0)
        else:
            guess[name] = torch.full_like(f[name], f[name].mean().item())
    scores = readout_scores(guess, f)
    for name in CONTINUOUS:
        assert scores[name] == pytest.approx(0.0, abs=1e-6), name
    # across the seam: 0.99 read for a true 0.01 is an error of 0.02, not 0.98
    near = dict(f, object_hue=torch.remainder(f["object_hue"] - 0.02, 1.0))
    assert readout_scores(near, f)["object_hue"] == pytest.approx(1 - 0.02**2 * 12, abs=0.01)


@pytest.fixture(scope="module")
def shipped():
    return load_readout()


def test_shipped_readout_meets_its_targets_on_fresh_renders(shipped):
    true = sample_factors(1000, seed=2026)  # neither the training stream nor the held-out set of config.json
    scores = readout_scores(read_factors(render(true), shipped), true)
    for name in CONTINUOUS:
        assert scores[name] >= 0.98, (name, scores[name])
    assert scores["shape"] >= 0.99, scores["shape"]


def test_rendered_scenes_are_in_the_world(shipped):
    # the re-render error of true renders is small (the read-out reads them back), and noise raises it
    images = render(sample_factors(200, seed=11))
    error = rerender_error(images, world_instrument(shipped))
    noisy = rerender_error(images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0)),
                           world_instrument(shipped))
    assert error.median() < 0.1 and (noisy > error).float().mean() > 0.95


def test_read_factors_refuses_wrong_images(shipped):
    with pytest.raises(ValueError, match=r"images must have shape \(any, 3, 32, 32\)"):
        read_factors(torch.zeros(2, 1, 28, 28), shipped)
    with pytest.raises(FileNotFoundError, match="python -m labkit.readout"):
        load_readout(EMBEDDED_READOUT.parent / "nowhere")


def test_read_factors_says_which_network_it_takes(shipped):
    with pytest.raises(TypeError, match="network must be a FactorReadout, got str 'shapes'; load_readout()"):
        read_factors(render(sample_factors(1)), network="shapes")


# ---------------------------------------------------------------- the trainer's output: together or not at all

TINY = dict(steps=2, batch_size=4, heldout=2)


class Killed(BaseException):
    """A SIGKILL as the code under test sees it: it stops there, nothing after runs."""


@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_a_kill_while_the_readout_is_written_leaves_the_old_one_or_the_new_one(tmp_path, monkeypatch, at):
    from pathlib import Path

    from labkit import files

    out = tmp_path / "readout"
    train_readout(out, **TINY, seed=1)
    count, rename, replace = [0], Path.rename, files.os.replace

    def step():
        count[0] += 1
        if count[0] == at:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(Path, "rename", lambda self, target: (step(), rename(self, target))[1])
        patch.setattr(files.os, "replace", lambda src, dst: (step(), replace(src, dst))[1])
        patch.setattr(files.shutil, "rmtree", lambda *a, **k: step())
        with pytest.raises(Killed):
            train_readout(out, **TINY, seed=2)
    loaded = load_readout(out)  # never the new weights beside the old record
    record = json.loads((out / "config.json").read_text())
    assert record["training"]["seed"] == (1 if at <= 2 else 2)
    weights = load_file(out / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in loaded.state_dict().items())


def test_a_diverged_training_writes_nothing(tmp_path, monkeypatch):
    from labkit import readout

    monkeypatch.setattr(readout, "readout_loss", lambda outputs, targets: outputs.sum() * float("nan"))
    with pytest.raises(FloatingPointError, match="lr=0.003"):
        train_readout(tmp_path / "out", **TINY)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_the_trainer_refuses_a_folder_holding_other_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_:
        readout_main(["--out", str(tmp_path), "--steps", "1"])
    assert exit_.value.code == 2 and "notes.txt" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
