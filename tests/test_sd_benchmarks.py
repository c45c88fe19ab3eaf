"""benchmarks/sd_quality.py and benchmarks/gpu_check.py run end to end on toy sizes, on the CPU."""

import json
import sys
from pathlib import Path

import pytest
import torch
from test_latent import save_tiny_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402
import sd_quality  # noqa: E402


def test_sd_quality_reports_rerender_faithfulness_and_the_vae(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "sd")
    report = sd_quality.main(["--model", str(folder), "--samples", "6", "--steps", "2", "--batch-size", "4",
                              "--out", str(tmp_path / "out")])
    assert json.loads((tmp_path / "out" / "sd_quality.json").read_text()) == report
    r, f, v = report["rerender"], report["faithfulness"], report["vae"]
    assert 0 < r["true_median"] <= r["threshold_true_p99"] < 0.1  # the read-out's own error on true renders
    assert 0 <= r["unconditional_share_within"] <= 1 and 0 <= f["share_all_named_right"] <= 1
    assert sum(c["samples"] for c in f["by_number_named"].values()) == 6
    assert f["true_renders_share_all_named_right"] == 1.0  # the read-out reads true renders' named factors right
    assert v["reconstruction_rmse_median"] > 0.05  # a random VAE reconstructs nothing
    low, high = f["share_all_named_right_ci95"]
    assert low <= f["share_all_named_right"] <= high and 0 <= low <= high <= 1
    per = report["per_sample"]
    assert sum(per["prompted_all_named_right"]) / 6 == pytest.approx(f["share_all_named_right"], abs=1e-4)
    assert len(per["prompts"]) == len(per["prompted_rerender_error"]) == 6
    assert set(report["weights_sha256"]) == {"unet", "vae", "text_encoder", "readout"}
    # the same prompts and noise at w = 1: paired differences of the 0/1 values, within [-1, 1]
    g = report["guidance"]
    assert len(per["prompted_unguided_all_named_right"]) == len(per["prompted_unguided_rerender_error"]) == 6
    expected = f["share_all_named_right"] - g["faithful_unguided"]
    assert g["faithful_minus_unguided"]["mean_difference"] == pytest.approx(expected, abs=1e-3)
    assert -1 <= g["within_minus_unguided"]["low"] <= g["within_minus_unguided"]["high"] <= 1
    # along w on the same prompts and noise: w = 1 and the default scale are the runs above
    scales = report["by_scale"]
    assert set(scales) == {"1", "3", "7.5"}
    assert scales["7.5"]["within"] == r["prompted_share_within"]
    assert scales["1"]["within"] == r["prompted_unguided_share_within"]
    assert scales["1"]["faithful"] == g["faithful_unguided"]
    three = per["by_scale"]["3"]
    assert sum(three["all_named_right"]) / 6 == pytest.approx(scales["3"]["faithful"], abs=1e-4)
    within = sum(e <= r["threshold_true_p99"] for e in three["rerender_error"]) / 6
    assert within == pytest.approx(scales["3"]["within"], abs=1e-4)
    naming_some = [ok for ok, p in zip(per["prompted_all_named_right"], per["prompts"]) if p != "an object"]
    if naming_some:
        assert f["share_all_named_right_naming_some"] == pytest.approx(sum(naming_some) / len(naming_some), abs=1e-4)


def test_sd_quality_refuses_a_bad_scale(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sd_quality.main(["--scales", "-1", "--out", str(tmp_path)])
    assert "--scales" in capsys.readouterr().err


def test_the_sd15_shaped_basis_runs_with_a_prompt_at_toy_size():
    record = gpu_check.sd15_basis(torch.device("cpu"), quick=True, k=2)
    assert record["prompt_tokens"] == 77 and record["residual_max"] <= 1e-4 and len(record["sigma"]) == 2


@pytest.mark.slow
def test_gpu_check_runs_whole_on_the_cpu_at_toy_sizes(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "sd")
    report = gpu_check.main(["--quick", "--device", "cpu", "--miniature", str(folder), "--out", str(tmp_path)])
    assert report["celeba_256_k10"]["residual_max"] <= 1e-4 and report["miniature"]["images_finite"]
    assert (tmp_path / "gpu_check_cpu_quick.json").exists()


def test_gpu_check_refuses_a_missing_gpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cuda", "--out", str(tmp_path)])
    assert "CUDA" in capsys.readouterr().err
