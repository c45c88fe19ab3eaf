"""The world benchmarks run end to end on the shipped shapes model (small settings) and write what they print."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labkit.cache import weights_fingerprint
from labkit.models import load_model
from labkit.readout import load_readout

REPO = Path(__file__).resolve().parents[1]


def test_load_model_shapes_is_the_shipped_colour_model_and_loads_fast():
    load_model()  # imports and first-use costs are not the shapes model's
    start = time.perf_counter()
    model = load_model("shapes")
    seconds = time.perf_counter() - start
    assert model.name == "embedded:shapes" and model.sample_shape == (3, 32, 32)
    assert model.prediction_type == "v_prediction"
    assert seconds < 1.0, f"load_model('shapes') took {seconds:.2f} s"
    assert load_model("mnist").sample_shape == load_model().sample_shape == (1, 28, 28)


def _shipped_weights() -> dict[str, str]:
    return {"model": weights_fingerprint(load_model("shapes").unet), "readout": weights_fingerprint(load_readout())}


def test_committed_world_results_come_from_the_shipped_weights():
    """Chapter 08 prints these files: they must be measurements of the models labkit ships now."""
    shipped = _shipped_weights()
    for path in ("labkit/embedded/shapes/quality.json", "labkit/embedded/shapes/quality_200_steps.json",
                 "benchmarks/results/known_factors_cpu.json"):
        recorded = json.loads((REPO / path).read_text()).get("weights_sha256")
        assert recorded == shipped, f"{path} was computed from other weights: rerun its benchmark"


def _run(script: str, *args: str) -> str:
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                         timeout=600, check=False, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_world_quality_rerenders_samples_and_reports_histograms(tmp_path):
    stdout = _run("world_quality.py", "--samples", "12", "--batch-size", "6", "--steps", "5", "--out", str(tmp_path))
    report = json.loads((tmp_path / "quality.json").read_text())
    r = report["rerender"]
    assert 0 < r["true_median"] <= r["threshold_true_p99"]
    assert 0 <= r["share_samples_within_threshold"] <= 1
    assert report["weights_sha256"] == _shipped_weights()
    assert f"{r['share_samples_within_threshold']:.1%}" in stdout
    for name, counts in report["histograms"]["samples"].items():
        assert sum(counts) == 12 and sum(report["histograms"]["true"][name]) == 12


def test_known_factors_scores_every_method_on_the_same_samples(tmp_path):
    out = tmp_path / "kf.json"
    # A resume file from other weights (a model since retrained) with this very configuration:
    # its row must not be reused, or the table would mix two models.
    config = {"model": "shapes", "samples": 2, "fractions": [0.6], "k": 1, "budgets": [0.1], "pca_samples": 4,
              "steps": 5, "seed": 0}
    stale = {"method": "park-local", "edit": "naive", "fraction": 0.6, "t": 0, "sample": 0, "stale": True}
    out.with_name(out.name + ".partial").write_text(json.dumps(
        {"config": config, "weights": {"model": "0" * 64, "readout": "0" * 64}, "rows": [stale]}))
    stdout = _run("known_factors.py", "--samples", "2", "--fractions", "0.6", "--k", "1", "--pca-samples", "4",
                  "--steps", "5", "--budgets", "0.1", "--out", str(out))
    report = json.loads(out.read_text())
    assert report["config"] == config
    assert not any(r.get("stale") for r in report["rows"])
    assert report["weights_sha256"] == _shipped_weights()
    methods = {f"{m}/{e}" for m in ("park-local", "park-global", "loco", "random") for e in ("guidance", "naive")}
    methods |= {"h-park-u/h", "h-pca/h", "h-random/h"}
    assert set(report["summary"]) == methods
    for cell in report["summary"].values():
        assert set(cell) == {"0.6"}
        for scores in cell.values():
            assert 1 / 6 - 1e-9 <= scores["disentanglement"] <= 1 and 1 <= scores["coverage"] <= 1
    assert not any(r.get("skipped") for r in report["rows"])  # at 0.6 T every method applies
    assert not out.with_name(out.name + ".partial").exists()  # the resume file goes once the run is whole
    row = next(r for r in report["rows"] if r["method"] == "park-local" and r["edit"] == "naive")
    assert len(row["response"]) == 1 and len(row["response"][0]) == 6
    assert torch.tensor(row["response"][0]).max() / torch.tensor(row["response"][0]).sum() == pytest.approx(
        row["disentanglement"][0])
    assert "ratios against the floor" in stdout


def test_model_quality_quality_boost_adds_eta_noise_only_when_asked(tmp_path):
    """10 DDIM steps put t = 200 and 100 at or below 0.2 T: with --quality-boost those steps get η = 1 noise."""
    reports = {}
    for name, extra in (("plain", []), ("boost", ["--quality-boost"])):
        _run("model_quality.py", "--samples", "4", "--batch-size", "4", "--steps", "10",
             "--out", str(tmp_path / name), *extra)
        reports[name] = json.loads((tmp_path / name / "quality.json").read_text())
    assert reports["plain"]["sampler"]["eta_1_below"] is None
    assert reports["boost"]["sampler"]["eta_1_below"] == 0.2
    plain, boost = (reports[k]["memorisation"]["sample_to_nearest_training"] for k in ("plain", "boost"))
    assert plain != boost, "the same seed gave the same samples with and without the η = 1 steps"
