"""labkit.train_sd and labkit.captions: the miniature's captions, tokenizer and resumable staged training."""

import json

import pytest
import torch

from labkit import captions, worlds
from labkit.checkpoint import CHECKPOINT_FILES
from labkit.files import write_manifest
from labkit.latent import LatentDiffusionModel
from labkit.models import load_model
from labkit.sd_layout import UNET_WIDTHS, unet_config
from labkit.train_sd import SDConfig, main, train_sd


def test_captions_name_the_factors_they_were_made_from_and_read_back():
    factors = worlds.sample_factors(300, seed=1)
    texts = captions.random_captions(factors, torch.Generator().manual_seed(0), empty=0.1)
    named_counts = [len(captions.parse_caption(t)) for t in texts]
    assert 10 <= sum(t == "" for t in texts) <= 50  # about 10% empty prompts
    assert set(named_counts) == set(range(8))  # every number of named factors occurs
    for i, text in enumerate(texts):
        named = captions.parse_caption(text)
        assert captions.caption(named) == text or text == ""
        agree = captions.faithful(named, {k: v[i:i + 1] for k, v in factors.items()})
        assert all(bool(ok) for ok in agree.values()), (text, {k: v[i].item() for k, v in factors.items()})


def test_faithful_checks_each_named_factor_by_its_range():
    factors = worlds.sample_factors(4, seed=0)
    factors["object_hue"] = torch.tensor([0.0, 0.08, 0.09, 0.5])  # red, red (edge), yellow's side, cyan
    factors["rotation"] = torch.tensor([0.3, -0.3, 0.1, -0.1])
    agree = captions.faithful({"object_hue": "red", "rotation": "left"}, factors)
    assert agree["object_hue"].tolist() == [True, True, False, False]
    assert agree["rotation"].tolist() == [True, False, True, False]


def test_a_scene_on_a_boundary_is_faithful_to_its_own_description():
    # every hue boundary k/12 in float32 (1/12 rounds up, so describe says yellow), θ = 0, x = 0, the middle scale
    n = 13
    factors = worlds.sample_factors(n, seed=0)
    for name in ("object_hue", "wall_hue", "floor_hue"):
        factors[name] = torch.tensor([k / 12 for k in range(12)] + [0.9999999])
    middle = (worlds.FACTORS["scale"].low + worlds.FACTORS["scale"].high) / 2
    factors.update(scale=torch.full((n,), middle), rotation=torch.zeros(n), x_position=torch.zeros(n))
    for i in range(n):
        words = captions.describe(factors, i)
        agree = captions.faithful(words, {k: v[i:i + 1] for k, v in factors.items()})
        assert all(bool(ok) for ok in agree.values()), (words, {k: v[i].item() for k, v in factors.items()})
    assert captions.describe(factors, 1)["object_hue"] == "yellow"  # float32 1/12 lies a hair past red's edge


def test_the_tokenizer_makes_every_word_one_token(tmp_path):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(captions.tokenizer_files(tmp_path))
    for word in captions.WORDS:
        assert len(tokenizer.tokenize(word)) == 1, word
    assert len(tokenizer.tokenize("purple")) > 1


def test_the_tokenizer_numbers_the_words_alike_in_every_process(tmp_path):
    import subprocess
    import sys

    # the BPE trainer breaks ties in hash order, which differs between processes
    for i in range(3):
        code = f"from labkit import captions; captions.tokenizer_files({str(tmp_path / str(i))!r})"
        subprocess.run([sys.executable, "-c", code], check=True)
    vocabs = [json.loads((tmp_path / str(i) / "vocab.json").read_text()) for i in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]
    assert [vocabs[0][word + "</w>"] for word in captions.WORDS] == list(range(2, 2 + len(captions.WORDS)))


def test_bad_captions_are_refused():
    for text, message in [("a red", "a shape or 'object'"), ("the red square", "starts with"),
                          ("an object, on a wall", "after the comma")]:
        with pytest.raises(ValueError, match=message):
            captions.parse_caption(text)


def test_two_stage_training_resumes_and_saves_a_loadable_pipeline(tmp_path):
    out = tmp_path / "sd"
    config = dict(out=str(out), vae_steps=2, steps=2, batch_size=4, checkpoint_every=1, tiny=True, warmup=0)
    train_sd(SDConfig(**config))
    log = json.loads((out / "training_log.json").read_text())
    assert log["vae"]["steps"] == 2 and log["diffusion"]["resumed_from"] == 0
    assert log["vae"]["seconds_per_step_this_run"] > 0 and log["vae"]["scaling_factor"] > 0
    model = load_model(out)
    assert isinstance(model, LatentDiffusionModel) and model.prediction_type == "v_prediction"
    assert model.conditioned("a red square").prompt == "a red square"
    vocab = (out / "checkpoint-tokenizer" / "vocab.json").read_text()
    (out / "checkpoint-tokenizer" / "vocab.json").write_text(vocab + "\n")  # a mark: the resumed run must keep it
    train_sd(SDConfig(**{**config, "steps": 3}))  # resumes the diffusion stage; the VAE is done
    assert (out / "checkpoint-tokenizer" / "vocab.json").read_text() == vocab + "\n"
    log = json.loads((out / "training_log.json").read_text())
    assert log["diffusion"]["resumed_from"] == 2 and log["vae"]["steps"] == 2
    assert [run["stage"] for run in log["history"]] == ["vae", "diffusion", "diffusion"]
    # saved again over the first pipeline, with a manifest over the new files and not the checkpoints beside them
    listed = json.loads((out / "manifest.json").read_text())["files"]
    assert "model_index.json" in listed and not any(name.startswith(("checkpoint-", "training_log")) for name in listed)
    assert load_model(out).prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="other options"):
        train_sd(SDConfig(**{**config, "steps": 4, "lr": 5e-4}))
    with pytest.raises(ValueError, match="unet_widths"):
        train_sd(SDConfig(**{**config, "steps": 4, "unet_widths": (64, 128)}))
    # a checkpoint from before --unet-widths was trained at the default widths, and resumes at them
    state = out / "checkpoint-diffusion" / "state.json"
    saved = json.loads(state.read_text())
    del saved["config"]["unet_widths"]
    state.write_text(json.dumps(saved))
    write_manifest(state.parent, CHECKPOINT_FILES)  # as the older run wrote it
    train_sd(SDConfig(**{**config, "steps": 4}))
    assert json.loads((out / "training_log.json").read_text())["diffusion"]["resumed_from"] == 3


def test_the_decoder_stage_changes_the_decoder_only_and_survives_a_later_diffusion_resume(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "sd"
    config = dict(out=str(out), vae_steps=2, steps=2, batch_size=4, checkpoint_every=1, tiny=True, warmup=0)
    with pytest.raises(FileNotFoundError, match="run the vae and diffusion stages first"):
        train_sd(SDConfig(**config, stage="decoder", decoder_steps=2))
    train_sd(SDConfig(**config))
    weights = "vae/diffusion_pytorch_model.safetensors"
    first = load_file(out / weights)
    unet_weights = out / "unet" / "diffusion_pytorch_model.safetensors"
    unet = load_file(unet_weights)
    untouched = {name: (out / name).read_bytes() for name in ("unet/config.json", "text_encoder/config.json",
                                                               "tokenizer/vocab.json", "model_index.json")}
    train_sd(SDConfig(**config, stage="decoder", decoder_steps=2, decoder_lr=1e-2))
    tuned = load_file(out / weights)
    assert set(tuned) == set(first)
    for name in first:  # the encoder (and so the latent space) is kept; the decoder has moved
        same = torch.equal(tuned[name], first[name])
        assert same == (not name.startswith(("decoder.", "post_quant_conv."))), name
    assert all(torch.equal(w, unet[n]) for n, w in load_file(unet_weights).items())
    assert all((out / name).read_bytes() == content for name, content in untouched.items())
    log = json.loads((out / "training_log.json").read_text())
    assert log["decoder"]["steps"] == 2 and "reconstruction_rmse_median" in log["decoder"]["before"]
    assert [run["stage"] for run in log["history"]] == ["vae", "diffusion", "decoder"]
    assert round(load_model(out).vae.config.scaling_factor, 5) == log["vae"]["scaling_factor"]  # the latent scale kept
    train_sd(SDConfig(**{**config, "steps": 3}))  # resuming the diffusion stage keeps the fine-tuned decoder
    assert all(torch.equal(w, tuned[n]) for n, w in load_file(out / weights).items())
    assert json.loads((out / "training_log.json").read_text())["diffusion"]["resumed_from"] == 2
    with pytest.raises(ValueError, match="decoder_steps: 0"):
        SDConfig(out=str(out), stage="decoder").check()
    with pytest.raises(ValueError, match="decoder_lr"):
        SDConfig(out=str(out), decoder_lr=0.0).check()


def test_the_unet_widths_reach_the_unet_and_bad_ones_are_refused():
    assert unet_config(64, widths=(64, 128))["block_out_channels"] == (64, 128)
    assert unet_config(64)["block_out_channels"] == UNET_WIDTHS
    for bad, match in (((50, 96), "multiple of 16"), ((64,), "2 widths"), ((0, 96), "16..1024"), ("64 128", "tuple")):
        with pytest.raises((ValueError, TypeError), match=match):
            SDConfig(out="runs/x", unet_widths=bad).check()


def test_the_command_line_refuses_bad_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--steps", "0"])
    assert "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--unet-widths", "50", "96"])
    assert "--unet-widths" in (err := capsys.readouterr().err) and "multiples of 16" in err
    with pytest.raises(FileNotFoundError, match="--stage vae"):
        train_sd(SDConfig(out=str(tmp_path / "x"), stage="diffusion", tiny=True))
