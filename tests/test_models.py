"""labkit.models and labkit.notebook: a bare U-Net as a model, no global state touched, the chapter setup."""

import shutil

import pytest
import torch
from conftest import TINY_UNET
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor
from safetensors.torch import load_file

from labkit import models
from labkit.diffusion import h_space, sample_noise
from labkit.models import ARCHITECTURES, from_unet, load_model
from labkit.notebook import setup


def test_from_unet_prepares_like_load_model(tiny_dir, tiny):
    unet = UNet2DModel.from_pretrained(tiny_dir, subfolder="unet", low_cpu_mem_usage=False)
    model = from_unet(unet, tiny.schedule, name="tiny")
    assert all(isinstance(m.processor, AttnProcessor) for m in model.unet.modules() if isinstance(m, Attention))
    assert not model.unet.training and not any(p.requires_grad for p in model.unet.parameters())
    x = sample_noise(model, 1, seed=0)
    assert torch.equal(h_space(model, 500)(x), h_space(tiny, 500)(x))  # same weights, same map
    _, jv = torch.func.jvp(h_space(model, 500), (x,), (torch.ones_like(x),))  # forward AD works
    assert torch.isfinite(jv).all()


def test_from_unet_default_schedule_is_ddpms_linear_one():
    torch.manual_seed(0)
    model = from_unet(UNet2DModel(**TINY_UNET))
    assert model.num_train_timesteps == 1000 and model.schedule["beta_schedule"] == "linear"
    assert (model.schedule["beta_start"], model.schedule["beta_end"]) == (1e-4, 0.02)
    assert model.timesteps(10)[0] == 900


def test_architectures_build_on_the_meta_device():
    with torch.device("meta"):
        models = {name: from_unet(UNet2DModel(**config), name=name) for name, config in ARCHITECTURES.items()}
    assert models["ddpm-cifar10-32"].sample_shape == (3, 32, 32)
    assert models["ddpm-celebahq-256"].sample_shape == (3, 256, 256)


def test_from_unet_checks_its_input():
    with pytest.raises(TypeError, match="unet must be a diffusers UNet2DModel"):
        from_unet(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="num_train_timesteps"):
        from_unet(UNet2DModel(**TINY_UNET), schedule={"beta_start": 1e-4})


def test_loading_leaves_torchs_precision_flags_alone(tiny_dir):
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    try:
        conv.fp32_precision = matmul.fp32_precision = "tf32"  # whatever the user chose
        load_model(tiny_dir)
        from_unet(UNet2DModel(**TINY_UNET))
        assert conv.fp32_precision == matmul.fp32_precision == "tf32"
    finally:
        conv.fp32_precision, matmul.fp32_precision = before


def test_setup_loads_the_chapter_model(tiny_dir):
    lab = setup()
    assert lab.embedded_mnist and lab.model.name == "embedded" and lab.device == torch.device("cpu")
    assert setup("mnist").embedded_mnist and not setup("shapes").embedded_mnist  # follows the model loaded
    other = setup(tiny_dir, device="cpu")
    assert not other.embedded_mnist and other.model.sample_shape == (1, 8, 8)
    wall, cpu = other.elapsed()
    assert wall >= 0 and cpu >= 0


def test_expect_fails_the_embedded_model_and_notes_on_another(tiny_dir, capsys):
    lab, other = setup(), setup(tiny_dir, device="cpu")
    for chapter in (lab, other):
        chapter.expect(torch.tensor(2.0) > 1, "two is more than one")  # true: silent
        chapter.expect(True, "true")
    assert capsys.readouterr().out == ""
    with pytest.raises(AssertionError, match="the similarity falls with t"):
        lab.expect(torch.tensor(0.5) > 1, "the similarity falls with t")
    other.expect(False, "the similarity falls with t")  # another model: a note, the chapter goes on
    assert "the similarity falls with t" in capsys.readouterr().out
    for holds, error in ((1, TypeError), (torch.tensor([True, False]), TypeError), (torch.tensor(1.0), TypeError)):
        with pytest.raises(error, match="holds"):
            lab.expect(holds, "a claim")
    with pytest.raises(ValueError, match="claim is empty"):
        lab.expect(True, " ")
    with pytest.raises(TypeError, match="claim must be a str"):
        lab.expect(True, None)


def test_require_embedded_mnist_stops_another_model_only(tiny_dir):
    setup().require_embedded_mnist("the digit measures")
    with pytest.raises(RuntimeError, match="the digit measures: .*stops here.*MODEL = None"):
        setup(tiny_dir, device="cpu").require_embedded_mnist("the digit measures")
    with pytest.raises(TypeError, match="reason"):
        setup().require_embedded_mnist("")


def test_setup_sets_the_threads_it_is_given_and_checks_them_first(tiny_dir):
    before = torch.get_num_threads()
    try:
        setup(tiny_dir, device="cpu")
        assert torch.get_num_threads() == before  # threads=None leaves torch's setting
        setup(tiny_dir, device="cpu", threads=1)
        assert torch.get_num_threads() == 1
        for bad, error in ((0, ValueError), (1.5, TypeError)):
            with pytest.raises(error, match="threads"):
                setup("no/such/model", threads=bad)  # refused before the (failing) load
        with pytest.raises(TypeError, match="tf32 must be True or False"):
            setup("no/such/model", tf32="yes")
    finally:
        torch.set_num_threads(before)


def test_the_embedded_models_load_as_before(tmp_path):
    # the checked copy gives the same weights as the shipped files, read directly from safetensors
    for key in models.SHIPPED_WITH_MANIFEST:
        folder = models.EMBEDDED_MODELS[key]
        loaded = load_model(key).unet.state_dict()
        shipped = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
        assert loaded.keys() == shipped.keys() and all(torch.equal(loaded[k], shipped[k]) for k in shipped)
    # a folder saved before manifests existed (save_pretrained writes none) is read as before
    copy = shutil.copytree(models.EMBEDDED_MODELS["mnist"] / "unet", tmp_path / "mnist" / "unet")
    shutil.copytree(models.EMBEDDED_MODELS["mnist"] / "scheduler", tmp_path / "mnist" / "scheduler")
    (copy / "manifest.json").unlink()
    assert torch.equal(load_model(copy.parent).unet.conv_in.weight, load_model().unet.conv_in.weight)
