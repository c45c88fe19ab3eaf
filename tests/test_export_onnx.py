"""scripts/export_onnx.py: each exported network computes what torch computes (checked with onnxruntime),
the shipped noise is torch's, and the files are rebuilt only when their content key changes.

The text-conditioned miniature's export is checked on a tiny random pipeline (test_latent's), not on the
trained one: its U-Net under a prompt (out and h), text encoder, VAE decoder and word table."""

import json
import shutil
import types
import warnings

import export_onnx
import numpy as np
import onnxruntime
import pytest
import torch
from export_onnx import (
    content_key,
    export_miniature,
    export_readout,
    export_unet,
    noise_draws,
    readout_factors,
    subpixel_upsamplers,
    up_to_date,
    word_table,
)
from test_latent import PROMPT, save_tiny_pipeline

from labkit.captions import random_captions
from labkit.diffusion import h_space, sample_noise
from labkit.models import load_model
from labkit.readout import decode, load_readout
from labkit.worlds import sample_factors

# float32 through onnxruntime against torch, relative to the largest value (about 1 here); measured on the tiny
# pipeline: out 9e-7, h 2e-6, c 1.3e-6, images 2.4e-6
TOLERANCE = 1e-4


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
    (tmp_path / "m-bases.f16").write_bytes(b"x")
    # with the miniature, its four files too
    mini = {"unet": {"file": "u.onnx", "noise": {"file": "u-noise.f32"}}, "text_encoder": {"file": "t.onnx"},
            "vae_decoder": {"file": "v.onnx"}}
    (tmp_path / "manifest.json").write_text(json.dumps({**files, "miniature": mini}))
    assert not up_to_date(tmp_path, "abc")
    for name in ("u.onnx", "u-noise.f32", "t.onnx", "v.onnx"):
        (tmp_path / name).write_bytes(b"x")
    assert up_to_date(tmp_path, "abc")
    (tmp_path / "t.onnx").unlink()
    assert not up_to_date(tmp_path, "abc")


# ------------------------------------------------------------------------------ the text-conditioned miniature

@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return load_model(save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "pipeline"))


@pytest.fixture(scope="module")
def miniature(sd, tmp_path_factory):
    """The tiny pipeline exported as make live exports the miniature: (the folder, its manifest entry)."""
    out = tmp_path_factory.mktemp("generated")
    return out, export_miniature(sd, out)


def close(actual, expected, what):
    expected = expected.numpy()
    assert actual.shape == expected.shape, what
    error = np.abs(actual - expected).max()
    assert error < TOLERANCE * max(1.0, np.abs(expected).max()), f"{what} differs by {error:.2g}"


def test_exported_miniature_unet_gives_the_output_and_h_under_each_rows_prompt(sd, miniature):
    out_dir, entry = miniature
    run = session(out_dir / entry["unet"]["file"])
    prompts = ["", PROMPT, "a blue triangle"]  # one prompt per row, as the browser batches ∅ and c for guidance
    bound = [sd.conditioned(p, guidance_scale=1.0) for p in prompts]
    c = torch.cat([m.prompt_embeds for m in bound])
    z = torch.randn(3, *sd.sample_shape, generator=torch.Generator().manual_seed(0))  # batch 3: not the traced 2
    for t in (0, 480, 999):
        out, h = run.run(None, {"z": z.numpy(), "t": np.array([t], dtype=np.float32),
                                "encoder_hidden_states": c.numpy()})
        for i, m in enumerate(bound):
            with torch.no_grad():
                close(out[i:i + 1], m.output(z[i:i + 1], t), f"t={t}, {prompts[i]!r}: out")
                close(h[i:i + 1], h_space(m, t)(z[i:i + 1]), f"t={t}, {prompts[i]!r}: h")
        # the graph reads c: the same latent under the empty prompt gives another output and another h
        other, other_h = run.run(None, {"z": z.numpy(), "t": np.array([t], dtype=np.float32),
                                        "encoder_hidden_states": c[[0, 0, 0]].numpy()})
        assert np.abs(other[1] - out[1]).max() > 1e-2 and np.abs(other_h[1] - h[1]).max() > 1e-2
    assert not sd.unet.mid_block._forward_hooks
    assert entry["unet"]["h_shape"] == list(h.shape[1:]) and entry["unet"]["prediction_type"] == "v_prediction"


def test_exported_text_encoder_gives_encode_prompts_embeddings(sd, miniature):
    out_dir, entry = miniature
    run = session(out_dir / entry["text_encoder"]["file"])
    outputs = {}
    for prompt in ("", PROMPT):
        ids = sd.tokenizer(prompt, padding="max_length", max_length=sd.tokenizer.model_max_length,
                           return_tensors="np").input_ids
        (outputs[prompt],) = run.run(None, {"input_ids": ids.astype(np.int64)})
        close(outputs[prompt], sd.encode_prompt(prompt), f"{prompt!r}: c")
    assert np.abs(outputs[PROMPT] - outputs[""]).max() > 1e-2  # another prompt, other embeddings
    assert entry["text_encoder"]["hidden_size"] == outputs[""].shape[-1]


def test_exported_vae_decoder_takes_the_diffusion_latent_as_decode_does(sd, miniature):
    import onnx

    out_dir, entry = miniature
    run = session(out_dir / entry["vae_decoder"]["file"])
    z = torch.randn(3, *sd.sample_shape, generator=torch.Generator().manual_seed(2))
    (images,) = run.run(None, {"z": z.numpy()})
    with torch.no_grad():
        close(images, sd.decode(z), "images")
        # the convention: z, divided by s inside; the undivided latent decodes to something else
        assert np.abs(images - sd.vae.decode(z).sample.numpy()).max() > 1e-2
    assert entry["vae_decoder"]["image_shape"] == list(images.shape[1:])
    assert entry["vae_decoder"]["scaling_factor"] == sd.vae.config.scaling_factor
    ops = [node.op_type for node in onnx.load(str(out_dir / entry["vae_decoder"]["file"])).graph.node]
    assert "Resize" not in ops and ops.count("DepthToSpace") == 2  # both upsamplers are sub-pixel convolutions


def words_to_ids(table, prompt):
    """The rule word_table states for the browser: bos, each word (a comma is one), eos, padding."""
    words = [table["words"][w] for w in prompt.lower().replace(",", " , ").split()]
    return [table["bos"], *words, table["eos"]] + [table["pad"]] * (table["max_length"] - len(words) - 2)


def test_the_word_table_tokenizes_every_caption_as_the_tokenizer_does(sd, miniature):
    table = miniature[1]["tokenizer"]
    assert json.loads(json.dumps(table)) == table  # it goes into manifest.json as it is
    captions = random_captions(sample_factors(40, seed=0), torch.Generator().manual_seed(0))
    for prompt in [*captions, *export_onnx.MINIATURE_PROMPTS, "A Red  square,on the LEFT"]:
        ids = sd.tokenizer(prompt, padding="max_length", max_length=sd.tokenizer.model_max_length).input_ids
        assert words_to_ids(table, prompt) == ids, prompt
    assert table["examples"][PROMPT] == words_to_ids(table, PROMPT)
    assert words_to_ids(table, "a red square") != words_to_ids(table, "a blue square")
    with pytest.raises(ValueError, match="not a closed list of words"):  # SD's own tokenizer: ship vocab and merges
        word_table(types.SimpleNamespace(name="sd-1.5", tokenizer=range(49408)))


def test_export_miniature_writes_its_files_and_noise(sd, miniature, tiny, tmp_path):
    out_dir, entry = miniature
    unet = entry["unet"]
    assert unet["file"] == "shapes-sd-unet.onnx" and entry["text_encoder"]["file"] == "shapes-sd-text.onnx"
    assert entry["vae_decoder"]["file"] == "shapes-sd-vae-decoder.onnx"
    noise = np.fromfile(out_dir / unet["noise"]["file"], dtype="<f4").reshape(len(unet["noise"]["seeds"]),
                                                                            unet["noise"]["draws"], *sd.sample_shape)
    assert torch.equal(torch.from_numpy(noise[1, :1]), sample_noise(sd, 1, seed=unet["noise"]["seeds"][1]))
    assert unet["schedules"]["20"] == sd.timesteps(20)
    with pytest.raises(TypeError, match="LatentDiffusionModel"):  # a pixel-space U-Net has no text encoder
        export_miniature(tiny, tmp_path)
    assert not list(tmp_path.iterdir())  # refused before writing anything


def test_the_miniatures_weights_and_tokenizer_enter_the_content_key(tmp_path, monkeypatch):
    """A copy of the repository's layout: a changed byte of the miniature's weights or merges changes the key,
    training state beside them (checkpoint-*/) does not."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(export_onnx.__file__, tmp_path / "scripts" / "export_onnx.py")
    monkeypatch.setattr(export_onnx, "REPO", tmp_path)
    monkeypatch.setattr(export_onnx, "__file__", str(tmp_path / "scripts" / "export_onnx.py"))
    sd_folder = tmp_path / "labkit" / "embedded" / "shapes" / "sd"
    files = {name: sd_folder / name for name in ("unet/diffusion_pytorch_model.safetensors", "tokenizer/merges.txt",
                                                 "checkpoint-diffusion/model.safetensors")}
    for file in files.values():
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"0")
    key = content_key()
    for name, file in files.items():
        file.write_bytes(b"1")
        assert (content_key() != key) == (not name.startswith("checkpoint")), name
        file.write_bytes(b"0")
    assert content_key() == key
