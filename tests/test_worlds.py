"""labkit.worlds: the renderer of scenes from known factors."""

import pytest
import torch

from labkit import worlds
from labkit.worlds import CONTINUOUS, FACTORS, SHAPES, render, sample_factors


def one_scene(index: int = 0, seed: int = 0) -> dict:
    return {name: v[index : index + 1].clone() for name, v in sample_factors(8, seed).items()}


def test_sample_factors_in_range_seeded_and_typed():
    a, b, c = sample_factors(500, seed=3), sample_factors(500, seed=3), sample_factors(500, seed=4)
    assert set(a) == set(FACTORS)
    for name, f in FACTORS.items():
        assert a[name].shape == (500,)
        assert torch.equal(a[name], b[name]) and not torch.equal(a[name], c[name])
        assert a[name].min() >= f.low and a[name].max() <= f.high
        assert (a[name].dtype == torch.int64) == (f.kind == "categorical")
    assert set(a["shape"].tolist()) == set(range(len(SHAPES)))


def test_render_shape_range_and_determinism():
    f = sample_factors(16, seed=1)
    x = render(f)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, render(sample_factors(16, seed=1)))
    assert render(f, size=16, supersample=3).shape == (16, 3, 16, 16)
    # a scene does not depend on the others in its batch
    assert torch.allclose(render({k: v[3:4] for k, v in f.items()}), x[3:4], atol=1e-6)


@pytest.mark.parametrize("name", list(FACTORS))
def test_every_factor_alone_changes_the_image(name):
    f = sample_factors(32, seed=2)
    base = render(f)
    moved = dict(f)
    if name == "shape":
        moved[name] = (f[name] + 1) % len(SHAPES)
    else:
        span = FACTORS[name].high - FACTORS[name].low
        v = f[name] + 0.25 * span  # a quarter of the range, reflected back into it
        moved[name] = torch.where(v > FACTORS[name].high, f[name] - 0.25 * span, v)
    change = (render(moved) - base).abs().flatten(1).amax(1)
    assert (change > 0.05).all(), f"{name}: smallest change {change.min():.3g}"


@pytest.mark.parametrize("name", CONTINUOUS)
def test_smooth_finite_differences_shrink_with_the_step(name):
    f = sample_factors(16, seed=5)
    span = FACTORS[name].high - FACTORS[name].low
    u = torch.rand(16, generator=torch.Generator().manual_seed(0))
    mid = dict(f, **{name: FACTORS[name].low + span * (0.25 + 0.5 * u)})
    base = render(mid)
    diffs = []
    for step in (1e-2, 1e-3, 1e-4):
        moved = dict(mid, **{name: mid[name] + step * span})
        diffs.append((render(moved) - base).abs().max().item())
    # Lipschitz-like: ten times smaller step, about ten times smaller change (no jumps)
    assert diffs[1] < diffs[0] / 5 and diffs[2] < diffs[1] / 5, diffs


def continuous_map(scene: dict):
    """c (6,) continuous factors of one scene → its image, flattened, the rest of the scene fixed."""
    def g(c):
        return render(dict(scene, **{name: c[i : i + 1] for i, name in enumerate(CONTINUOUS)})).reshape(-1)
    return g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jacobian_wrt_continuous_factors_has_full_rank(seed):
    scene = one_scene(seed % 8, seed)
    c = torch.cat([scene[name] for name in CONTINUOUS]).double()
    scene = {k: (v.double() if k != "shape" else v) for k, v in scene.items()}
    jac = torch.func.jacfwd(continuous_map(scene))(c)  # (3072, 6)
    assert jac.shape == (3 * 32 * 32, len(CONTINUOUS))
    sigma = torch.linalg.svdvals(jac)
    assert sigma[-1] / sigma[0] > 1e-3, sigma
    # the Jacobian is the derivative: central differences agree
    h = 1e-5
    for i in range(len(CONTINUOUS)):
        e = torch.zeros_like(c)
        e[i] = h
        fd = (continuous_map(scene)(c + e) - continuous_map(scene)(c - e)) / (2 * h)
        assert torch.allclose(jac[:, i], fd, atol=1e-5), CONTINUOUS[i]


def test_errors_name_the_problem():
    f = sample_factors(4, seed=0)
    with pytest.raises(ValueError, match="unknown factor name.*'colour'"):
        render(dict(f, colour=torch.zeros(4)))
    with pytest.raises(ValueError, match="missing factor.*'rotation'"):
        render({k: v for k, v in f.items() if k != "rotation"})
    with pytest.raises(ValueError, match="'scale' = 0.9 is out of its range"):
        render(dict(f, scale=torch.full((4,), 0.9)))
    with pytest.raises(ValueError, match="'shape' = 3 is out of its range"):
        render(dict(f, shape=torch.full((4,), 3)))
    with pytest.raises(ValueError, match="'shape' must be an integer tensor"):
        render(dict(f, shape=torch.zeros(4)))
    with pytest.raises(ValueError, match="'wall_hue' must be a 1-D tensor"):
        render(dict(f, wall_hue=torch.zeros(4, 1)))
    with pytest.raises(ValueError, match="'x_position' has 3 values"):
        render(dict(f, x_position=torch.zeros(3)))
    with pytest.raises(ValueError, match="NaN"):
        render(dict(f, rotation=torch.full((4,), float("nan"))))
    with pytest.raises(ValueError, match="size"):
        render(f, size=2)
    with pytest.raises(ValueError, match="n must be in 1..10000000"):
        sample_factors(0)
    with pytest.raises(ValueError, match="render at most 16384 scenes per call"):  # before allocating 20 GB
        render(sample_factors(200_000))


def test_render_is_fast_enough_to_train_on_the_fly():
    import time

    f = sample_factors(256, seed=0)
    t0 = time.perf_counter()
    render(f)
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s on one free core; generous for a shared machine


def test_factor_std_is_the_uniform_std():
    f = sample_factors(20000, seed=0)
    for name in CONTINUOUS:
        if FACTORS[name].kind == "continuous":
            assert abs(f[name].std().item() - FACTORS[name].std) < 0.02 * FACTORS[name].std
    assert worlds.FACTORS["shape"].values == SHAPES


def test_ddpm_trains_on_scenes_rendered_on_the_fly_and_resumes(tmp_path):
    import json

    from labkit.train import TrainConfig, scene_batches, train_ddpm

    batch = next(scene_batches(4, torch.Generator().manual_seed(0), size=8))
    assert batch.shape == (4, 3, 8, 8) and batch.min() >= -1 and batch.max() <= 1
    tiny = {"sample_size": 8, "in_channels": 3, "out_channels": 3, "block_out_channels": (8, 16, 16),
            "layers_per_block": 1, "down_block_types": ("DownBlock2D",) * 3, "up_block_types": ("UpBlock2D",) * 3,
            "norm_num_groups": 4, "attention_head_dim": 8}
    config = {"out": str(tmp_path), "batch_size": 4, "warmup": 1, "checkpoint_every": 1, "model_config": tiny,
              "data": "shapes"}
    train_ddpm(TrainConfig(steps=2, **config))
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 2
    train_ddpm(TrainConfig(steps=3, **config))
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert log["resumed_from"] == 2 and log["steps"] == 3 and log["images"] == "rendered on the fly"
    with pytest.raises(ValueError, match="data must be one of 'mnist', 'shapes'"):
        train_ddpm(TrainConfig(steps=1, **{**config, "data": "cifar"}))
    # shapes trains with v-prediction, and the exported scheduler says so
    saved = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert saved["prediction_type"] == "v_prediction"
    # resuming with another prediction type is refused before any step, naming the flag
    with pytest.raises(ValueError, match="prediction='v_prediction'.*--prediction v_prediction"):
        train_ddpm(TrainConfig(steps=4, prediction="epsilon", **config))


def test_v_prediction_training_target_is_v(monkeypatch, tmp_path):
    """One step of the v-prediction loss regresses v = √ᾱ ε − √(1−ᾱ) x₀ (checked against a hand computation)."""
    from labkit import train

    seen = {}
    real = torch.nn.functional.mse_loss

    def spy(prediction, target):
        seen["target"] = target.detach().clone()
        return real(prediction, target)

    monkeypatch.setattr(torch.nn.functional, "mse_loss", spy)
    tiny = {"sample_size": 8, "in_channels": 3, "out_channels": 3, "block_out_channels": (8, 16, 16),
            "layers_per_block": 1, "down_block_types": ("DownBlock2D",) * 3, "up_block_types": ("UpBlock2D",) * 3,
            "norm_num_groups": 4, "attention_head_dim": 8}
    config = train.TrainConfig(out=str(tmp_path), steps=1, batch_size=4, warmup=1, model_config=tiny, data="shapes")
    train.train_ddpm(config)
    # replay the step's random draws: the generator is seeded with the config's seed and draws in this order
    gen = torch.Generator().manual_seed(config.seed)
    x0 = next(train.scene_batches(4, gen, size=8))
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, 1000, (4,), generator=gen)
    abar = train.ddpm_scheduler().alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(seen["target"], abar.sqrt() * noise - (1 - abar).sqrt() * x0, atol=1e-6)


def test_tangent_basis_at_the_edge_of_a_range_in_float32():
    # a read-out clamps rotation to 0.6 in float32, a hair above 0.6 in float64: still a scene of the world
    scene = worlds.sample_factors(1, seed=0)
    scene["rotation"] = torch.tensor([0.6], dtype=torch.float32)
    scene["scale"] = torch.tensor([worlds.FACTORS["scale"].low], dtype=torch.float32)
    q = worlds.tangent_basis(scene)
    assert q.shape == (1, 3 * 32 * 32, 6) and torch.allclose(q[0].T @ q[0], torch.eye(6, dtype=q.dtype), atol=1e-10)
