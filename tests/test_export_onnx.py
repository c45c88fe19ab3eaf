"""scripts/export_onnx.py: each exported network computes what torch computes (checked with onnxruntime),
the shipped noise is torch's, and the files are rebuilt only when their content key changes."""

import json

import numpy as np
import onnxruntime
import pytest
import torch
from export_onnx import export_readout, export_unet, noise_draws, readout_factors, up_to_date

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
