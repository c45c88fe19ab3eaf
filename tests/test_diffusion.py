"""labkit.diffusion: loading, the forward-AD fixes, h-space, DDIM sampling and inversion.

A tiny random U-Net with a self-attention mid-block (saved locally, like a downloaded model)
stands in for the architecture; the shipped embedded model is tested where training matters
(inversion accuracy, load time).
"""

import socket
import time

import pytest
import torch
from conftest import TINY_UNET as TINY
from conftest import linear_schedule as _schedule
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from labkit import spectral
from labkit.diffusion import check_timestep, ddim_invert, ddim_sample, h_space, sample_noise
from labkit.models import (
    ModelUnavailableError,
    attention_for_forward_ad,
    load_model,
    prepare_for_forward_ad,
    set_fp32_precision,
)


@pytest.fixture(scope="module")
def embedded():
    return load_model()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails loudly (and is recorded)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    return attempts


# ---------------------------------------------------------------------------------------- loading

def test_embedded_model_loads_fast_without_network(no_network):
    start = time.perf_counter()
    model = load_model()
    assert time.perf_counter() - start < 1.0
    assert no_network == []
    assert model.name == "embedded" and model.sample_shape == (1, 28, 28)
    assert model.device.type == "cpu" and not model.unet.training
    assert all(not p.requires_grad for p in model.unet.parameters())


def test_flat_layout_loads_like_pipeline_layout(tiny_dir, tmp_path, tiny):
    flat = tmp_path / "flat"
    tiny.unet.save_pretrained(flat)
    _schedule().save_pretrained(flat)
    other = load_model(flat)
    x = sample_noise(tiny, 1, seed=3)
    assert torch.equal(other.eps(x, 10), tiny.eps(x, 10))


def test_hub_id_offline_fails_fast_with_one_clear_message(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="unreachable") as info:
        load_model("google/ddpm-cifar10-32")
    assert time.perf_counter() - start < 1.0
    assert "config.json" not in str(info.value)


def test_bad_model_names_and_folders(tmp_path):
    with pytest.raises(ModelUnavailableError, match="neither a folder nor a hub id"):
        load_model("no such model")
    with pytest.raises(ModelUnavailableError, match="holds no diffusers model"):
        load_model(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_on_a_cpu_machine_is_a_clear_error(tiny_dir):
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        load_model(tiny_dir, device="cuda")


def test_cuda_precision_is_ieee_float32_unless_tf32_is_asked_for():
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    try:
        set_fp32_precision(torch.device("cpu"), tf32=False)         # other devices: flags untouched
        assert (conv.fp32_precision, matmul.fp32_precision) == before
        set_fp32_precision(torch.device("cuda"), tf32=False)
        assert conv.fp32_precision == matmul.fp32_precision == "ieee"
        set_fp32_precision("cuda", tf32=True)                       # a device name works too
        assert conv.fp32_precision == matmul.fp32_precision == "tf32"
    finally:
        conv.fp32_precision, matmul.fp32_precision = before


# ------------------------------------------------------------------------- forward-mode AD fixes

def test_jvp_works_with_plain_attention_processor(tiny):
    assert all(not isinstance(m.processor, AttnProcessor2_0) for m in tiny.unet.modules() if isinstance(m, Attention))
    f = h_space(tiny, 500)
    x = sample_noise(tiny, 1, seed=1)
    _, jv = torch.func.jvp(f, (x,), (torch.ones_like(x),))
    assert jv.shape == (1, 16, 2, 2) and torch.isfinite(jv).all()


def test_jvp_works_with_fused_processor_under_math_backend(tiny_dir):
    model = load_model(tiny_dir)
    for module in model.unet.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor2_0())  # diffusers' default: scaled_dot_product_attention
    x = sample_noise(model, 1, seed=1)
    v = torch.randn_like(x)
    _, jv_fused = torch.func.jvp(h_space(model, 300), (x,), (v,))  # h_space selects the math backend
    plain = load_model(tiny_dir)
    _, jv_plain = torch.func.jvp(h_space(plain, 300), (x,), (v,))
    torch.testing.assert_close(jv_fused, jv_plain, rtol=1e-4, atol=1e-5)
    assert torch.backends.cuda.flash_sdp_enabled()  # the process-wide switch is off again afterwards


def test_attention_for_forward_ad_switches_backends_only_for_fused_processors(tiny_dir):
    model = load_model(tiny_dir)
    with attention_for_forward_ad(model.unet):  # labkit's plain processors: no process-wide switch
        assert torch.backends.cuda.flash_sdp_enabled()
    next(m for m in model.unet.modules() if isinstance(m, Attention)).set_processor(AttnProcessor2_0())
    with attention_for_forward_ad(model.unet):
        assert not torch.backends.cuda.flash_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled()
    with pytest.raises(TypeError, match="unet must be a torch.nn.Module"):
        attention_for_forward_ad(model)


def test_group_norm_gets_contiguous_input_under_jvp():
    unet = prepare_for_forward_ad(UNet2DModel(**TINY))
    norms = [m for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m._forward_pre_hooks for m in norms)
    norm = norms[0]
    x = torch.randn(1, 3, 3, norm.num_channels).permute(0, 3, 1, 2)  # non-contiguous
    assert not x.is_contiguous()
    _, out = torch.func.jvp(norm, (x,), (torch.ones_like(x),))
    _, ref = torch.func.jvp(norm, (x.contiguous(),), (torch.ones_like(x),))
    torch.testing.assert_close(out, ref)


# ------------------------------------------------------------------------------------------ h-space

def test_h_space_is_the_mid_block_output_of_the_full_forward(tiny):
    captured = {}
    handle = tiny.unet.mid_block.register_forward_hook(lambda m, i, o: captured.setdefault("h", o))
    x = sample_noise(tiny, 2, seed=4)
    with torch.no_grad():
        tiny.eps(x, 250)
    handle.remove()
    torch.testing.assert_close(h_space(tiny, 250)(x), captured["h"])


def test_h_space_down_layers_and_bad_layer(tiny):
    x = sample_noise(tiny, 1)
    assert h_space(tiny, 10, layer="down.0")(x).shape == (1, 8, 4, 4)
    with pytest.raises(ValueError, match="layer must be"):
        h_space(tiny, 10, layer="up.0")


def test_jvp_matches_finite_differences_in_float64(tiny64):
    f = h_space(tiny64, 400)
    x = sample_noise(tiny64, 1, seed=5)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, jv = torch.func.jvp(f, (x,), (v,))
    eps = 1e-6
    fd = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
    assert (fd - jv).norm() / jv.norm() < 1e-6


def test_adjoint_identity(tiny64):
    f = h_space(tiny64, 700)
    x = sample_noise(tiny64, 1, seed=6)
    g = torch.Generator().manual_seed(2)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    h, pull = torch.func.vjp(f, x)
    u = torch.randn(h.shape, generator=g, dtype=torch.float64)
    _, jv = torch.func.jvp(f, (x,), (v,))
    (jtu,) = pull(u)
    torch.testing.assert_close((jv * u).sum(), (v * jtu).sum(), rtol=1e-10, atol=1e-12)


def test_local_basis_on_a_unet_matches_the_explicit_jacobian(tiny64):
    f = h_space(tiny64, 600)
    x = sample_noise(tiny64, 1, seed=7)
    J = torch.func.jacrev(f)(x).reshape(-1, x.numel())
    _, s, vh = torch.linalg.svd(J)
    basis = spectral.local_basis(f, x, k=4, method="krylov", tol=1e-8)
    torch.testing.assert_close(basis.sigma, s[:4], rtol=1e-6, atol=0)
    angles = spectral.principal_angles(basis.v, vh[:4].reshape(4, *x.shape))
    assert angles.max() < 1e-4
    jv = (J @ basis.v.reshape(4, -1).T).T
    torch.testing.assert_close(jv, basis.sigma[:, None] * basis.u.reshape(4, -1), rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------ sampling, inversion

def test_ddim_in_two_legs_equals_ddim_in_one(tiny):
    x = sample_noise(tiny, 2, seed=8)
    ts = tiny.timesteps(10)
    whole = ddim_sample(tiny, x, num_steps=10)
    middle = ddim_sample(tiny, x, num_steps=10, t_to=ts[4])
    torch.testing.assert_close(ddim_sample(tiny, middle, num_steps=10, t_from=ts[4]), whole)


def test_stochastic_ddim_is_seeded(tiny):
    x = sample_noise(tiny, 1, seed=9)
    a = ddim_sample(tiny, x, num_steps=10, eta=1.0, seed=1)
    assert torch.equal(a, ddim_sample(tiny, x, num_steps=10, eta=1.0, seed=1))
    assert not torch.equal(a, ddim_sample(tiny, x, num_steps=10, eta=1.0, seed=2))


def test_inversion_then_generation_reconstructs_on_the_embedded_model(embedded):
    """A trained model makes the DDIM ODE smooth enough that inversion retraces it.

    Inverting to 0.6 T and sampling back, the mean absolute pixel error (on the [-1, 1] scale)
    is ≤ 0.03 with 50 steps (measured 0.014 on the shipped model), and it is a discretisation
    error: doubling the steps shrinks it (measured 0.0115 with 100 steps, a ratio of 0.82; 0.021
    with 25 steps and 0.009 with 200).
    """
    x0 = ddim_sample(embedded, sample_noise(embedded, 4, seed=10), num_steps=50)
    t = 600
    errors = []
    for steps in (50, 100):
        xt = ddim_invert(embedded, x0, t_to=t, num_steps=steps)
        back = ddim_sample(embedded, xt, num_steps=steps, t_from=t)
        errors.append(float((back - x0).abs().mean()))
    assert errors[0] < 0.03
    assert errors[1] < 0.9 * errors[0]


def test_bad_latents_and_timesteps(tiny):
    good = sample_noise(tiny, 1)
    with pytest.raises(ValueError, match=r"shape \(batch, 1, 8, 8\)"):
        ddim_sample(tiny, good[0])
    with pytest.raises(ValueError, match="NaN"):
        ddim_sample(tiny, good * float("nan"))
    with pytest.raises(ValueError, match=r"0\.\.999"):
        h_space(tiny, 1000)
    with pytest.raises(ValueError, match="integer"):
        check_timestep(tiny, 2.5)
    with pytest.raises(ValueError, match="t_to=333 is not on the 10-step DDIM schedule"):
        ddim_invert(tiny, good, t_to=333, num_steps=10)
    with pytest.raises(ValueError, match="must be below"):
        ddim_sample(tiny, good, num_steps=10, t_from=100, t_to=500)


# ------------------------------------------------------------------------------ posterior mean

def test_posterior_mean_is_tweedies_formula_and_differentiable(tiny, tiny64):
    from labkit.diffusion import posterior_mean

    t = 600
    abar = _schedule().alphas_cumprod[t].item()
    x = sample_noise(tiny, 2, seed=3)
    expected = (x - (1 - abar) ** 0.5 * tiny.eps(x, t)) / abar ** 0.5
    f = posterior_mean(tiny, t)
    assert torch.allclose(f(x), expected, atol=1e-6)
    # J·v by forward AD agrees with a central finite difference (float64 model)
    f64 = posterior_mean(tiny64, t)
    x64 = sample_noise(tiny64, 1, seed=4)
    v = torch.randn_like(x64)
    _, jv = torch.func.jvp(f64, (x64,), (v,))
    eps = 1e-5
    fd = (f64(x64 + eps * v) - f64(x64 - eps * v)) / (2 * eps)
    assert torch.allclose(jv, fd, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="t must be in"):
        posterior_mean(tiny, 1000)


def test_a_v_prediction_model_gives_eps_x0_and_ddim_steps_as_diffusers_does(tiny64):
    """For a v-prediction U-Net (the shapes model), eps() is a v + s x, posterior_mean is a x − s v, and
    DDIM through eps() takes the same steps as diffusers' own DDIMScheduler(prediction_type="v_prediction")."""
    from diffusers import DDIMScheduler

    from labkit.diffusion import posterior_mean
    from labkit.models import from_unet

    vmodel = from_unet(tiny64.unet, {**tiny64.schedule, "prediction_type": "v_prediction"})
    assert vmodel.prediction_type == "v_prediction"
    t = 740
    abar = _schedule().alphas_cumprod[t].double().item()
    a, s = abar ** 0.5, (1 - abar) ** 0.5
    x = sample_noise(vmodel, 2, seed=5)
    v = vmodel.output(x, t)
    assert torch.allclose(vmodel.eps(x, t), a * v + s * x, atol=1e-12)
    x0 = posterior_mean(vmodel, t)(x)
    assert torch.allclose(x0, a * x - s * v, atol=1e-12)
    assert torch.allclose(x0, (x - s * vmodel.eps(x, t)) / a, atol=1e-9)  # Tweedie through ε agrees
    reference = DDIMScheduler.from_config(vmodel.schedule, clip_sample=False)
    reference.set_timesteps(10)
    y = x
    with torch.no_grad():
        for step in reference.timesteps:
            y = reference.step(vmodel.output(y, int(step)), int(step), y).prev_sample
    assert torch.allclose(ddim_sample(vmodel, x, num_steps=10), y, atol=1e-10)
