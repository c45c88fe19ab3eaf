"""labkit.readout: the shipped factor read-out reads fresh renders back to their factors."""

import math

import pytest
import torch

from labkit.readout import (
    EMBEDDED_READOUT,
    circular_difference,
    decode,
    encode,
    load_readout,
    read_factors,
    readout_scores,
)
from labkit.scoring import rerender_error, world_readout
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
    error = rerender_error(images, world_readout(shipped))
    noisy = rerender_error(images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0)),
                           world_readout(shipped))
    assert error.median() < 0.1 and (noisy > error).float().mean() > 0.95


def test_read_factors_refuses_wrong_images(shipped):
    with pytest.raises(ValueError, match=r"shape \(N, 3, 32, 32\)"):
        read_factors(torch.zeros(2, 1, 28, 28), shipped)
    with pytest.raises(FileNotFoundError, match="python -m labkit.readout"):
        load_readout(EMBEDDED_READOUT.parent / "nowhere")
