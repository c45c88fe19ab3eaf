"""scripts/export_onnx.py: each exported network computes what torch computes (checked with onnxruntime),
the shipped noise is torch's, and the files are rebuilt only when their content key changes."""

import json
import warnings

import numpy as np
import onnxruntime
import pytest
import torch
from export_onnx import export_readout, export_unet, noise_draws, readout_factors, subpixel_upsamplers, up_to_date

from labkit.diffusion import h_space, sample_noise
from labkit.models import load_model
from labkit.readout import decode, load_readout


def session(path):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options)


@pytest.mark.parametrize("name", [None, "shapes"])
def test_exported_unet_gives_the_output_and_h_of_torch(tmp_path, name):
    model = load_model() if name is None else load_model(name)
    run = session(export_unet(model, tmp_path / "unet.onnx"))
    x = torch.randn(3, *model.sample_shape, generator=torch.Generator().manual_seed(0))  # batch 3: not the traced 2
    for t in (0, 480, 999):
        out, h = run.run(None, {"x": x.numpy(), "t": np.array([t], dtype=np.float32)})
        with torch.no_grad():
            expected_out, expected_h = model.output(x, t), h_space(model, t)(x)
        assert out.shape == tuple(expected_out.shape) and h.shape == tuple(expected_h.shape)
        assert np.abs(out - expected_out.numpy()).max() < 1e-4, f"t={t}: out differs"
        scale = max(1.0, float(expected_h.abs().max()))
        assert np.abs(h - expected_h.numpy()).max() < 1e-4 * scale, f"t={t}: h differs"
    assert not model.unet.mid_block._forward_hooks  # exporting leaves the model as it was
    import onnx

    ops = [node.op_type for node in onnx.load(str(tmp_path / "unet.onnx")).graph.node]
    assert "Resize" not in ops and ops.count("DepthToSpace") == 2  # both upsamplers are sub-pixel convolutions


@pytest.mark.parametrize("size", [7, 8])  # odd: the MNIST U-Net's 7 → 14
def test_subpixel_upsampling_is_nearest_upsampling_then_the_convolution(tmp_path, size):
    """An explicit small case: torch's Upsample(nearest, ×2) → Conv 3×3, exported, rewritten, run."""
    import onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Conv2d(3, 5, 3, padding=1))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(), warnings.catch_warnings(action="ignore"):  # the legacy exporter's notices
        torch.onnx.export(net, (x,), str(tmp_path / "up.onnx"), input_names=["x"], output_names=["y"],
                          dynamo=False, opset_version=17)
        expected = net(x)
    model = onnx.load(str(tmp_path / "up.onnx"))
    assert subpixel_upsamplers(model.graph) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv"] * 4 + ["Concat", "DepthToSpace"]
    onnx.save(model, str(tmp_path / "subpixel.onnx"))
    (y,) = session(tmp_path / "subpixel.onnx").run(None, {"x": x.numpy()})
    assert y.shape == tuple(expected.shape)
    assert np.abs(y - expected.numpy()).max() < 1e-5
    # a Resize that is not nearest ×2 before a 3×3 convolution is left alone
    bilinear = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="bilinear"), net[1])
    with torch.no_grad(), warnings.catch_warnings(action="ignore"):
        torch.onnx.export(bilinear, (x,), str(tmp_path / "bilinear.onnx"), dynamo=False, opset_version=17)
    assert subpixel_upsamplers(onnx.load(str(tmp_path / "bilinear.onnx")).graph) == 0


def test_exported_readout_reads_the_same_factors(tmp_path):
    readout = load_readout()
    run = session(export_readout(readout, tmp_path / "readout.onnx"))
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    (outputs,) = run.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = readout(images)
    assert np.abs(outputs - expected.numpy()).max() < 1e-4
    # the layout JavaScript decodes by covers the outputs exactly, in labkit.readout.decode's order
    factors = readout_factors()
    assert [f["slice"][0] for f in factors[1:]] == [f["slice"][1] for f in factors[:-1]]
    assert factors[0]["slice"][0] == 0 and factors[-1]["slice"][1] == outputs.shape[1]
    assert [f["name"] for f in factors] == list(decode(expected))


def test_noise_draws_are_torchs_x_T_and_tail_noise():
    model = load_model()
    draws = noise_draws(model.sample_shape, seed=3, draws=4)
    assert torch.equal(draws[0:1], sample_noise(model, 1, seed=3))  # draw 0 is x_T
    g = torch.Generator().manual_seed(3)
    assert torch.equal(draws, torch.cat([torch.randn((1, *model.sample_shape), generator=g) for _ in range(4)]))


def test_up_to_date_needs_the_same_key_and_every_file(tmp_path):
    files = {"models": {"m": {"file": "m.onnx", "noise": {"file": "m-noise.f32"}, "bases": {"file": "m-bases.f16"}}},
             "readout": {"file": "readout.onnx"}, "key": "abc"}
    (tmp_path / "manifest.json").write_text(json.dumps(files))
    for name in ("m.onnx", "m-noise.f32", "m-bases.f16", "readout.onnx", "ort/ort.wasm.min.mjs",
                 "ort/ort-wasm-simd-threaded.mjs", "ort/ort-wasm-simd-threaded.wasm"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert up_to_date(tmp_path, "abc")
    assert not up_to_date(tmp_path, "another key")
    (tmp_path / "m-bases.f16").unlink()
    assert not up_to_date(tmp_path, "abc")
