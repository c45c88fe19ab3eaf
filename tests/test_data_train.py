"""The MNIST loader, the DDPM and classifier training loops, checkpoints and the exported model."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

from labkit import files
from labkit.checkpoint import load_checkpoint, save_checkpoint
from labkit.classifier import EMBEDDED_CLASSIFIER, DigitClassifier, classify, load_classifier
from labkit.data import batches, load_digits, to_pixel_range, to_unit_range
from labkit.train import (
    UNET_FILES,
    ClassifierConfig,
    TrainConfig,
    ddpm_scheduler,
    heldout_split,
    main,
    train_classifier,
    train_ddpm,
)

# A U-Net with the embedded model's layout (three levels, attention in the mid-block) but
# ~30× fewer parameters, so that a few training steps take a second.
TINY_UNET = dict(
    sample_size=28,
    in_channels=1,
    out_channels=1,
    block_out_channels=(8, 16, 16),
    layers_per_block=1,
    down_block_types=("DownBlock2D",) * 3,
    up_block_types=("UpBlock2D",) * 3,
    norm_num_groups=4,
    attention_head_dim=8,
)
STEPS = 10


# ---------------------------------------------------------------- data


def test_load_digits_shapes_range_and_classes():
    images, labels = load_digits()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (5000,) and labels.dtype == torch.int64
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    assert torch.bincount(labels).tolist() == [500] * 10
    # The background is the most common value and is -1 (black), the ink is bright.
    assert (images == -1).float().mean() > 0.7


def test_load_digits_filters_and_limit():
    images, labels = load_digits()
    some, some_labels = load_digits(digits=[3, 7])
    assert set(some_labels.tolist()) == {3, 7} and len(some) == 1000
    assert torch.equal(some, images[(labels == 3) | (labels == 7)])
    first, first_labels = load_digits(limit=10)
    assert torch.equal(first, images[:10]) and torch.equal(first_labels, labels[:10])
    sevens, seven_labels = load_digits(digits=[7], limit=5)
    assert len(sevens) == 5 and (seven_labels == 7).all()


@pytest.mark.parametrize("kwargs", [dict(digits=[10]), dict(digits=[-1]), dict(limit=0)])
def test_load_digits_bad_input(kwargs):
    with pytest.raises(ValueError):
        load_digits(**kwargs)


def test_range_conversions():
    grey = torch.tensor([0.0, 127.5, 255.0])
    assert torch.equal(to_unit_range(grey), torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.equal(to_pixel_range(torch.tensor([-2.0, 0.0, 1.0])), torch.tensor([0.0, 0.5, 1.0]))


def test_batches_cover_each_image_once_per_epoch():
    images = torch.arange(12.0)[:, None]
    stream = batches(images, 4, torch.Generator().manual_seed(0))
    epoch = torch.cat([next(stream) for _ in range(3)])
    assert sorted(epoch.flatten().tolist()) == list(range(12))
    with pytest.raises(ValueError):
        next(batches(images, 0, torch.Generator()))


def test_heldout_split():
    train, heldout = heldout_split(100, 0.1, seed=0)
    assert len(heldout) == 10 and len(train) == 90
    assert sorted(torch.cat([train, heldout]).tolist()) == list(range(100))
    assert torch.equal(heldout, heldout_split(100, 0.1, seed=0)[1])
    with pytest.raises(ValueError):
        heldout_split(100, 1.0, seed=0)


# ---------------------------------------------------------------- DDPM training


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm")
    config = TrainConfig(out=str(out), steps=STEPS, batch_size=16, lr=3e-3, warmup=0, checkpoint_every=5,
                         limit=64, model_config=TINY_UNET)
    train_ddpm(config)
    return config, out


def _denoising_loss(model: UNet2DModel) -> float:
    """The training loss (v-prediction, the default) on a fixed batch, fixed noise and fixed times."""
    gen = torch.Generator().manual_seed(123)
    x0, _ = load_digits(limit=64)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, 1000, (64,), generator=gen)
    abar = ddpm_scheduler().alphas_cumprod[t].view(-1, 1, 1, 1)
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    with torch.no_grad():
        v = abar.sqrt() * noise - (1 - abar).sqrt() * x0
        return torch.nn.functional.mse_loss(model(xt, t).sample, v).item()


def _ema_model(out) -> UNet2DModel:
    """A tiny U-Net carrying the EMA weights of the run's last checkpoint."""
    model = UNet2DModel(**TINY_UNET)
    shadow = load_file(out / "checkpoint" / "ema.safetensors")
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(shadow[f"shadow.{i}"])
    return model.eval()


def test_training_reduces_the_denoising_loss(tiny_run):
    config, out = tiny_run
    torch.manual_seed(config.seed)  # train_ddpm initialises the model right after this
    initial = UNet2DModel(**TINY_UNET).eval()
    trained = UNet2DModel(**TINY_UNET)
    trained.load_state_dict(load_file(out / "checkpoint" / "model.safetensors"))
    before, after = _denoising_loss(initial), _denoising_loss(trained.eval())
    assert after < 0.7 * before, (before, after)


def test_bf16_training_is_mixed_precision_and_learns(tiny_run, tmp_path):
    """precision="bf16" autocasts the U-Net: another trajectory than the float32 run from the same
    seed, float32 weights and EMA on disk, and the same drop in the denoising loss."""
    config, out = tiny_run
    bf16 = train_ddpm(TrainConfig(**{**asdict(config), "out": str(tmp_path / "bf16"), "precision": "bf16"}))
    weights32 = load_file(out / "checkpoint" / "model.safetensors")
    weights16 = load_file(bf16 / "checkpoint" / "model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights16.values())
    assert all(w.dtype == torch.float32 for w in load_file(bf16 / "checkpoint" / "ema.safetensors").values())
    assert any(not torch.equal(weights32[k], weights16[k]) for k in weights32)
    torch.manual_seed(config.seed)
    initial = UNet2DModel(**TINY_UNET).eval()
    trained = UNet2DModel(**TINY_UNET)
    trained.load_state_dict(weights16)
    assert _denoising_loss(trained.eval()) < 0.7 * _denoising_loss(initial)
    assert json.loads((bf16 / "training_log.json").read_text())["config"]["precision"] == "bf16"


def test_training_log(tiny_run):
    config, out = tiny_run
    log = json.loads((out / "training_log.json").read_text())
    assert log["steps"] == STEPS and log["resumed_from"] == 0 and log["images"] == 64
    assert log["seconds"] > 0 and log["parameters"] == sum(p.numel() for p in UNet2DModel(**TINY_UNET).parameters())
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == STEPS


def test_export_loads_through_from_pretrained(tiny_run):
    _, out = tiny_run
    unet = UNet2DModel.from_pretrained(out, subfolder="unet").eval()
    scheduler = DDPMScheduler.from_pretrained(out, subfolder="scheduler")
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.equal(unet(x, t).sample, _ema_model(out)(x, t).sample)
    reference = ddpm_scheduler()
    assert torch.equal(scheduler.betas, reference.betas)
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.num_train_timesteps == 1000
    eps = torch.randn_like(x)
    assert torch.equal(scheduler.step(eps, 500, x, generator=torch.Generator().manual_seed(1)).prev_sample,
                       reference.step(eps, 500, x, generator=torch.Generator().manual_seed(1)).prev_sample)
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"


def test_rerunning_a_finished_run_resumes_and_keeps_its_time(tiny_run, capsys):
    config, out = tiny_run
    seconds = json.loads((out / "checkpoint" / "state.json").read_text())["seconds"]  # time up to the last checkpoint
    before = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    train_ddpm(config)
    assert f"resuming from step {STEPS}" in capsys.readouterr().out
    after = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    log = json.loads((out / "training_log.json").read_text())
    assert log["resumed_from"] == STEPS and log["seconds"] >= seconds > 0


def _training_state(seed: int = 0):
    torch.manual_seed(seed)
    model = UNet2DModel(**TINY_UNET)
    ema = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True, power=3 / 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    lr_sched = get_cosine_schedule_with_warmup(optimizer, 2, 20)
    return model, ema, optimizer, lr_sched, torch.Generator().manual_seed(seed)


def _one_step(model, ema, optimizer, lr_sched, gen):
    x0, _ = load_digits(limit=8)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, 1000, (8,), generator=gen)
    loss = torch.nn.functional.mse_loss(model(x0 + noise, t).sample, noise)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    lr_sched.step()
    ema.step(model.parameters())


def test_checkpoint_round_trip_restores_the_exact_state(tmp_path):
    saved = _training_state()
    for _ in range(3):
        _one_step(*saved)
    save_checkpoint(tmp_path / "ckpt", 3, 12.5, *saved[:4], saved[4], TrainConfig(out=str(tmp_path)))
    restored = _training_state(seed=1)  # different initial weights, generator and so on
    step, seconds = load_checkpoint(tmp_path / "ckpt", *restored)
    assert (step, seconds) == (3, 12.5)

    def same(a, b):
        model_a, ema_a, opt_a, sched_a, gen_a = a
        model_b, ema_b, opt_b, sched_b, gen_b = b
        assert all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters()))
        assert all(torch.equal(p, q) for p, q in zip(ema_a.shadow_params, ema_b.shadow_params))
        assert ema_a.optimization_step == ema_b.optimization_step
        state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(torch.as_tensor(state_a[i][k]), torch.as_tensor(state_b[i][k]))
                   for i in state_a for k in state_a[i])
        assert sched_a.get_last_lr() == sched_b.get_last_lr()
        assert torch.equal(gen_a.get_state(), gen_b.get_state())

    same(saved, restored)
    _one_step(*saved)  # and the two continue identically
    _one_step(*restored)
    same(saved, restored)


def test_cuda_on_a_machine_without_one_is_a_usage_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    for what in ("ddpm", "classifier"):
        with pytest.raises(SystemExit) as exit_:
            main([what, "--out", str(tmp_path / what), "--device", "cuda"])
        assert exit_.value.code == 2 and "argument --device" in capsys.readouterr().err
        assert not (tmp_path / what).exists()


def test_bad_training_config_raises(tmp_path):
    with pytest.raises(ValueError):
        train_ddpm(TrainConfig(out=str(tmp_path), steps=0))
    with pytest.raises(ValueError, match="precision must be one of .*'fp16'"):
        train_ddpm(TrainConfig(out=str(tmp_path / "never"), precision="fp16"))
    with pytest.raises(ValueError, match="prediction must be one of .*'x0'"):
        train_ddpm(TrainConfig(out=str(tmp_path / "never"), prediction="x0"))
    assert not (tmp_path / "never").exists()  # refused before any work
    with pytest.raises(ValueError):
        train_classifier(ClassifierConfig(out=str(tmp_path), epochs=0))


def test_a_checkpoint_from_before_v_prediction_resumes_as_the_epsilon_model_it_is(tmp_path):
    """MNIST checkpoints written before v-prediction became the default say prediction=None, meaning ε:
    resuming one asks for --prediction epsilon instead of silently training it on the v target."""
    config = dict(out=str(tmp_path), batch_size=8, warmup=0, checkpoint_every=1, limit=16, model_config=TINY_UNET)
    train_ddpm(TrainConfig(steps=1, prediction="epsilon", **config))
    state_file = tmp_path / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    state["config"]["prediction"] = None
    state_file.write_text(json.dumps(state))
    (tmp_path / "checkpoint" / "manifest.json").unlink()  # as such old checkpoints were written
    with pytest.raises(ValueError, match="prediction='epsilon'.*--prediction epsilon"):
        train_ddpm(TrainConfig(steps=2, **config))
    train_ddpm(TrainConfig(steps=2, prediction="epsilon", **config))
    assert json.loads((tmp_path / "training_log.json").read_text())["resumed_from"] == 1
    saved = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert saved["prediction_type"] == "epsilon"


# ---------------------------------------------------------------- the classifier


def test_classifier_train_save_load_round_trip(tmp_path):
    out = train_classifier(ClassifierConfig(out=str(tmp_path), epochs=2, limit=200, batch_size=32))
    record = json.loads((out / "config.json").read_text())
    assert record["heldout"]["images"] == 20 and record["training"]["images"] == 180
    assert 0.0 <= record["heldout"]["accuracy"] <= 1.0
    loaded = load_classifier(out)
    assert isinstance(loaded, DigitClassifier) and not loaded.training
    weights = load_file(out / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in loaded.state_dict().items())


def test_shipped_classifier_is_accurate_on_its_heldout_digits():
    images, labels = load_digits()
    _, heldout = heldout_split(len(labels), 0.1, seed=0)
    prediction = classify(images[heldout])
    assert prediction.probabilities.shape == (500, 10)
    assert torch.allclose(prediction.probabilities.sum(dim=1), torch.ones(500))
    accuracy = (prediction.label == labels[heldout]).float().mean().item()
    assert accuracy > 0.95
    record = json.loads((EMBEDDED_CLASSIFIER / "config.json").read_text())
    assert accuracy == pytest.approx(record["heldout"]["accuracy"], abs=1e-3)


def test_classifier_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m labkit.train classifier"):
        load_classifier(tmp_path)
    with pytest.raises(ValueError):
        classify(torch.zeros(2, 28, 28), DigitClassifier())
    with pytest.raises(ValueError):
        DigitClassifier(channels=(16, 32))


def test_classify_reads_the_shipped_classifier_once(monkeypatch):
    from labkit import classifier as module

    module._load_once.cache_clear()
    calls = []
    real = module.load_classifier
    monkeypatch.setattr(module, "load_classifier", lambda path=None: calls.append(path) or real(path))
    images = torch.zeros(3, 1, 28, 28)
    first, second = module.classify(images), module.classify(images)
    assert calls == [EMBEDDED_CLASSIFIER]
    assert torch.equal(first.probabilities, second.probabilities)
    module._load_once.cache_clear()


# ---------------------------------------------------------------- resuming: only the same run, never a silent restart

RUN = dict(batch_size=8, warmup=0, checkpoint_every=1, limit=16, model_config=TINY_UNET)


class Killed(BaseException):
    """A SIGKILL as the code under test sees it: it stops there, nothing after runs."""


def _kill_at(monkeypatch, at: int) -> None:
    """The ``at``-th rename/replace/removal of the checkpoint swap raises Killed (a removal half-way)."""
    count = [0]
    rename, replace, rmtree = Path.rename, files.os.replace, files.shutil.rmtree

    def step():
        count[0] += 1
        if count[0] == at:
            raise Killed

    def killing_rmtree(path, *args, **kwargs):
        if count[0] + 1 == at:
            next(Path(path).iterdir()).unlink()
        step()
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(Path, "rename", lambda self, target: (step(), rename(self, target))[1])
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (step(), replace(src, dst))[1])
    monkeypatch.setattr(files.shutil, "rmtree", killing_rmtree)


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    """A run with its first checkpoint, at step 1 (each test trains on from a copy)."""
    out = tmp_path_factory.mktemp("one_step")
    train_ddpm(TrainConfig(out=str(out), steps=1, **RUN))
    return out


@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_a_kill_at_any_step_of_a_checkpoint_save_resumes_from_a_complete_checkpoint(one_step, tmp_path, monkeypatch,
                                                                                    at, capsys):
    shutil.copytree(one_step, tmp_path, dirs_exist_ok=True)
    with monkeypatch.context() as patch:
        _kill_at(patch, at)  # the save of step 2: manifest, checkpoint → .old, .tmp → checkpoint, remove .old
        with pytest.raises(Killed):
            train_ddpm(TrainConfig(out=str(tmp_path), steps=2, **RUN))
    capsys.readouterr()
    train_ddpm(TrainConfig(out=str(tmp_path), steps=3, **RUN))
    resumed = 1 if at <= 2 else 2
    assert f"resuming from step {resumed}" in capsys.readouterr().out
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert log["resumed_from"] == resumed
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]


@pytest.mark.parametrize("at", [5, 6, 7, 8])
def test_a_kill_during_the_export_leaves_a_complete_unet(one_step, tmp_path, monkeypatch, at):
    shutil.copytree(one_step, tmp_path, dirs_exist_ok=True)
    with monkeypatch.context() as patch:
        _kill_at(patch, at)  # 1-4: the checkpoint of step 2; 5-8: unet/'s manifest, unet → .old, .tmp → unet, removal
        with pytest.raises(Killed):
            train_ddpm(TrainConfig(out=str(tmp_path), steps=2, **RUN))
    # the old unet/ or the new one, whole (checked against its manifest), never half of one
    assert files.complete_folder(tmp_path / "unet", UNET_FILES) == tmp_path / "unet"
    train_ddpm(TrainConfig(out=str(tmp_path), steps=2, **RUN))  # the same command again finishes the export
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("unet")) == ["unet"]
    exported = load_file(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in _ema_model(tmp_path).state_dict().items())


def test_a_damaged_checkpoint_is_refused_by_name_not_restarted(one_step, tmp_path):
    shutil.copytree(one_step, tmp_path, dirs_exist_ok=True)
    weights = tmp_path / "checkpoint" / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="ema.safetensors"):
        train_ddpm(TrainConfig(out=str(tmp_path), steps=2, **RUN))


@pytest.mark.parametrize("change, flag", [(dict(lr=1e-2), "--lr"), (dict(data="shapes"), "--data"),
                                          (dict(seed=1), "--seed"), (dict(steps=1), "--steps 2")])
def test_resuming_with_other_options_is_refused_before_any_work(tmp_path, change, flag, capsys):
    train_ddpm(TrainConfig(out=str(tmp_path), steps=2, **RUN))
    before = (tmp_path / "checkpoint" / "model.safetensors").read_bytes()
    options = {**RUN, "steps": 3, **change}
    with pytest.raises(ValueError, match=flag):
        train_ddpm(TrainConfig(out=str(tmp_path), **options))
    with pytest.raises(SystemExit) as exit_:  # the command line says the same, as a usage error
        main(["ddpm", "--out", str(tmp_path), "--batch-size", "8", "--warmup", "0", "--checkpoint-every", "1",
              *[f"--{k}={v}" for k, v in change.items() if k != "steps"], "--steps", str(options["steps"])])
    assert exit_.value.code == 2
    assert (tmp_path / "checkpoint" / "model.safetensors").read_bytes() == before


def test_training_refuses_to_overwrite_another_models_weights(tmp_path, tiny_dir):
    shutil.copytree(tiny_dir, tmp_path / "model")
    before = (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="unet"):
        train_ddpm(TrainConfig(out=str(tmp_path / "model"), steps=1, **RUN))
    assert (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before
