"""The world benchmarks run end to end on the shipped shapes model (small settings) and write what they print."""

import ast
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from labkit.cache import weights_fingerprint
from labkit.models import load_model
from labkit.readout import load_readout
from labkit.stats import compare_all

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
                 "benchmarks/results/known_factors_cpu.json", "benchmarks/results/manifold_dimension_cpu.json"):
        if not (REPO / path).exists():  # a benchmark whose run is not committed yet
            continue
        recorded = json.loads((REPO / path).read_text()).get("weights_sha256")
        if path.endswith("manifold_dimension_cpu.json"):
            shipped = {"model": _shipped_weights()["model"]}
        assert recorded == shipped, f"{path} was computed from other weights: rerun its benchmark"


def test_committed_sd_results_come_from_the_shipped_miniature():
    """Chapter 09_text_conditioned prints these files: measurements of the shipped shapes-sd and read-out."""
    model = load_model("shapes-sd")
    shipped = {part: weights_fingerprint(getattr(model, part)) for part in ("unet", "vae", "text_encoder")}
    shipped["readout"] = weights_fingerprint(load_readout())
    for path in ("benchmarks/results/sd_quality.json", "benchmarks/results/sd_prompts_cpu.json"):
        if not (REPO / path).exists():  # a benchmark whose run is not committed yet
            continue
        recorded = json.loads((REPO / path).read_text())["weights_sha256"]
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


def test_known_factors_scores_every_method_on_the_same_samples_and_resumes(tmp_path):
    out = tmp_path / "kf.json"
    args = ["--samples", "2", "--fractions", "0.6", "--k", "1", "--pca-samples", "4", "--steps", "5",
            "--budgets", "0.1", "--dose-samples", "1", "--dose-budgets", "0.05", "0.1", "--resamples", "100",
            "--methods", "park-global", "loco-mask", "random", "oracle", "h-random", "--out", str(out)]
    stdout = _run("known_factors.py", *args)
    report = json.loads(out.read_text())
    assert report["weights_sha256"] == _shipped_weights()
    assert report["config"]["samples"] == 2 and report["timing"]["units"] == 2
    methods = {f"{m}/{e}" for m in ("park-global", "loco-mask", "random", "oracle") for e in ("guidance", "naive")}
    methods |= {"h-random/h"}
    assert set(report["summary"]) == methods
    for key, cell in report["summary"].items():
        d = cell["0.6"]["disentanglement"]
        assert d["n"] <= 2 and (d["n"] == 0 or d["low"] - 1e-9 <= d["mean"] <= d["high"] + 1e-9), (key, d)
    # every edit is counted: k directions (7 for the oracle) × 2 signs × 1 budget × 2 samples
    for key in methods:
        directions = 7 if key.startswith("oracle") else 1
        assert report["edits"]["matched"][key] + report["edits"]["unmatched"][key] == directions * 2 * 2, key
    assert "units" not in report and report["units_folder"] == "kf.json.units"
    unit = json.loads((tmp_path / report["units_folder"] / f"{report['key']}-f0.6-s0.json").read_text())
    assert "dose" in unit["methods"]["random/naive"] and set(unit["methods"]["random/naive"]["dose"]) == {"0.05", "0.1"}
    oracle_response = unit["methods"]["oracle/naive"]["response"]
    assert len(oracle_response) == 7 and len(oracle_response[0]) == 7  # one direction per factor, 7 factors
    assert "0.6" in report["comparisons"] and "floor_to_ceiling" in report
    assert "sample 1, t = 0.6 T" in stdout
    # a rerun with the same configuration, weights and code recomputes nothing; another budget is another run
    again = _run("known_factors.py", *args)
    assert "sample 0, t = 0.6 T" not in again and json.loads(out.read_text())["key"] == report["key"]
    units = list((tmp_path / "kf.json.units").iterdir())
    assert len(units) == 2 and all(p.name.startswith(report["key"]) for p in units)
    # a stopped run merges, per t, the samples that have its unit; fewer than two is refused with the reason
    merged = _run("known_factors.py", *args, "--merge-available")
    assert "{'0.6': 2}" in merged and json.loads(out.read_text())["samples_merged"] == {"0.6": 2}
    # --fractions is not in the key: a run of another set of t finds these units
    other_t = [a if a != "0.6" else "0.6 0.8" for a in args]
    assert _run("known_factors.py", *" ".join(other_t).split(), "--merge-available").count("{'0.6': 2}") == 1
    units[0].unlink()
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "known_factors.py"), *args, "--merge-available"],
                         capture_output=True, text=True, timeout=600, check=False, cwd=REPO)
    assert run.returncode != 0 and "no t has units of 2 samples" in run.stderr


def test_known_factors_checks_its_flags_before_work(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("known_factors", REPO / "benchmarks" / "known_factors.py")
    known_factors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(known_factors)
    for bad, word in ((["--samples", "1"], "--samples"), (["--budgets", "1.5"], "--budgets"),
                      (["--methods", "park-local"], "random"), (["--out", str(tmp_path)], "--out"),
                      (["--dose-samples", "99"], "--dose-samples"), (["--device", "bogus"], "--device")):
        with pytest.raises(SystemExit) as exit_:
            known_factors.parse(bad)
        assert exit_.value.code == 2 and word in capsys.readouterr().err, bad


def test_known_factors_resamples_follow_compare_alls_rule():
    """Each family of m pairs gets 20 m / alpha resamples unless --resamples is given; the report records them."""
    spec = importlib.util.spec_from_file_location("known_factors", REPO / "benchmarks" / "known_factors.py")
    known_factors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(known_factors)
    assert known_factors.comparison_resamples(15) == 42_000 and known_factors.comparison_resamples(12) == 26_400
    assert known_factors.comparison_resamples(2) == 2000 and known_factors.comparison_resamples(15, 500) == 500
    assert known_factors.parse([]).resamples is None
    report = json.loads((REPO / "benchmarks/results/known_factors_cpu.json").read_text())
    for fraction, families in report["comparisons"].items():
        for measure, rows in families.items():
            assert report["comparison_resamples"][fraction][measure] >= 20 * len(rows) / 0.05, (fraction, measure)


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


def test_known_factors_code_key_ignores_docstrings_and_comments_not_code():
    spec = importlib.util.spec_from_file_location("known_factors", REPO / "benchmarks" / "known_factors.py")
    known_factors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(known_factors)

    def tree(source: str) -> str:
        return known_factors._without_docstrings(ast.parse(source))

    base = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    assert tree(base) == tree('def f(x):\n    """Another doc."""\n    return x + 1  # a comment\n')
    assert tree(base) == tree("def f(x):\n    return x + 1\n")
    assert tree(base) != tree('def f(x):\n    """Doc."""\n    return x + 2\n')


def test_known_factors_gives_a_floor_to_ceiling_scale_only_where_the_oracle_is_detectably_above_random():
    # an oracle below the floor makes the span negative and flips every method's fraction: no number then
    spec = importlib.util.spec_from_file_location("known_factors", REPO / "benchmarks" / "known_factors.py")
    known_factors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(known_factors)
    rng = np.random.default_rng(0)
    floor = rng.normal(0.45, 0.05, 40)
    cases = {"above": floor + 0.1 + rng.normal(0, 0.02, 40), "below": floor - 0.03 + rng.normal(0, 0.02, 40),
             "level": floor + rng.normal(0, 0.02, 40)}
    for name, ceiling in cases.items():
        rows = compare_all({"oracle/guidance": ceiling.tolist(), "random/guidance": floor.tolist(),
                            "park-local/guidance": (floor + 0.01).tolist()}, n_resamples=500)
        why = known_factors._ceiling_above_floor(rows, "oracle/guidance", "random/guidance")
        assert (why is None) == (name == "above"), (name, why)
        if why is not None:
            assert why.startswith("no scale") and "oracle/guidance" in why
    assert "not compared" in known_factors._ceiling_above_floor([], "oracle/naive", "random/naive")
