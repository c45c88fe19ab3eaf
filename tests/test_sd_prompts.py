"""benchmarks/sd_prompts.py end to end on a tiny random pipeline: the mechanics and the known answers.

The numbers of a random pipeline mean nothing; what must hold whatever the weights: a prompt's
tangent space under itself encoded again is the same (similarity 1, and neither h nor the Jacobian
changes), the basis does not depend on the guidance scale at one x_t (similarity 1), a prompt naming
nothing leaves every factor free (share 1), B_j shares exactly j words with A, and every cell has
its per-sample values and interval. The Jacobian probes are checked against an explicit Jacobian.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from test_latent import save_tiny_pipeline

from labkit import captions
from labkit.diffusion import h_space, timestep_at
from labkit.models import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import sd_prompts  # noqa: E402

SAMPLES = 2
ARGS = ["--samples", str(SAMPLES), "--fractions", "0.4", "0.8", "--edit-fractions", "0.6", "--k", "2",
        "--steps", "3", "--n-iter", "1", "--max-rounds", "1", "--resamples", "100", "--scales", "1", "3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "pipeline")
    out = tmp_path_factory.mktemp("out") / "sd_prompts.json"
    argv = ["--model", str(folder), *ARGS, "--out", str(out)]
    return argv, out, sd_prompts.main(argv)


def cells(tree):
    """Every {mean, low, high, n, per_sample} cell in a nested report."""
    if isinstance(tree, dict):
        if "per_sample" in tree:
            yield tree
        else:
            for value in tree.values():
                yield from cells(value)


def test_the_report_is_the_json_file_and_holds_the_three_experiments(run):
    _, out, report = run
    assert json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in strict JSON")) == report
    assert report["seeds"] == list(range(SAMPLES)) and report["factors"] == list(sd_prompts.NAMES)
    assert {"tangent", "free", "guidance"} <= set(report) and report["timing"]["units"] == SAMPLES * 4
    found = list(cells({k: report[k] for k in ("tangent", "free", "guidance")}))
    assert len(found) > 30
    for cell in found:  # per-sample values in seed order, and an interval around the mean
        assert len(cell["per_sample"]) == SAMPLES
        assert cell["n"] == sum(v is not None for v in cell["per_sample"])
        if cell["n"] >= 2:
            assert cell["low"] - 1e-12 <= cell["mean"] <= cell["high"] + 1e-12


def test_a_prompt_has_its_own_tangent_space_and_b_j_shares_j_words(run):
    _, _, report = run
    tangent = report["tangent"]
    assert tangent["random_expected"] == 2 / (4 * 8 * 8)
    for fraction in ("0.4", "0.8"):
        cell = tangent["by_fraction"][fraction]
        # B_7 = A encoded again: the known answer
        assert cell["shared"]["7"]["per_sample"] == pytest.approx([1.0] * SAMPLES, abs=1e-6)
        assert all(0 <= v <= 1 + 1e-9 for j in cell["shared"].values() for v in j["per_sample"])
        assert all(v < 0.2 for v in cell["random"]["per_sample"])
        # ... so neither h nor its Jacobian changes; another prompt changes both
        assert cell["jacobian_change"]["7"]["per_sample"] == pytest.approx([0.0] * SAMPLES, abs=1e-6)
        assert cell["h_change"]["7"]["per_sample"] == pytest.approx([0.0] * SAMPLES, abs=1e-6)
        assert all(v > 1e-4 for j in "0123" for v in cell["jacobian_change"][j]["per_sample"])
        assert all(0 < v <= 1 + 1e-6 for v in cell["gap_ratio"]["per_sample"]) and set(cell["sigma"]) == {"1", "2", "3"}
    for measure in ("by_shared", "jacobian_change", "h_change"):
        assert set(tangent["smallest_minus_largest_t"][measure]) == {str(j) for j in range(8)}
    for unit in report["units"]["tangent"]:
        assert unit["sigma"] == sorted(unit["sigma"], reverse=True) and len(unit["sigma"]) == 3  # k + 1
    for unit in report["units"]["tangent"]:
        reference = captions.parse_caption(unit["prompt"])
        assert len(reference) == 7
        for j, text in unit["prompts"].items():
            words = captions.parse_caption(text)
            assert len(words) == 7 and sum(words[f] == reference[f] for f in words) == int(j)


def test_a_prompt_naming_nothing_leaves_every_factor_free(run):
    _, _, report = run
    cell = report["free"]["by_fraction"]["0.6"]
    assert set(cell) == {"t", "0", "2", "4", "6"}
    for which in ("top", "random"):
        assert all(v is None or v == pytest.approx(1.0) for v in cell["0"][which]["per_sample"])
    assert cell["0"]["top_minus_random"] is None and cell["4"]["uniform_share"] == 3 / 7
    assert {"mean_difference", "low", "high", "n"} <= set(cell["2"]["top_minus_random"])
    for unit in report["units"]["free"]:
        for m, record in unit["named"].items():
            assert len(record["named"]) == int(m) == len(captions.parse_caption(record["prompt"]))
            assert len(record["top"]["response"]) == 2 and len(record["top"]["response"][0]) == 7
            assert all(record[w]["pixel_change"] is None or record[w]["pixel_change"] > 0 for w in ("top", "random"))
    assert set(cell["2"]["pixel_change"]) == {"top", "random"}


def test_the_guidance_scale_leaves_the_basis_at_one_latent_unchanged(run):
    _, _, report = run
    cell = report["guidance"]["by_fraction"]["0.6"]
    assert cell["same_latent_similarity"]["per_sample"] == pytest.approx([1.0] * SAMPLES, abs=1e-6)
    assert set(cell["similarity"]) == {"1.0|3.0"} and set(cell["faithful_edited"]) == {"1.0", "3.0"}
    assert set(cell["faithful_minus_first_scale"]) == {"3.0"} and set(cell["edited_minus_unedited"]) == {"1.0", "3.0"}
    assert all(v in (0.0, 1.0) for w in cell["faithful_unedited"].values() for v in w["per_sample"])


def test_a_second_run_reads_every_unit_back(run, monkeypatch):
    argv, _, report = run

    def computed(*args):
        raise AssertionError("a unit was computed again")

    for unit in ("tangent_unit", "free_unit", "guidance_unit"):
        monkeypatch.setattr(sd_prompts, unit, computed)
    again = sd_prompts.main(argv)
    assert {k: v for k, v in again.items() if k != "timing"} == {k: v for k, v in report.items() if k != "timing"}


def test_more_samples_extend_the_run_instead_of_starting_it_again(run, monkeypatch):
    argv, _, report = run

    class Computed(Exception):
        pass

    def computed(model, fraction, seed, *rest):
        raise Computed(seed)

    for unit in ("tangent_unit", "free_unit", "guidance_unit"):
        monkeypatch.setattr(sd_prompts, unit, computed)
    more = [str(SAMPLES + 1) if a == str(SAMPLES) and argv[i - 1] == "--samples" else a for i, a in enumerate(argv)]
    with pytest.raises(Computed) as first:
        sd_prompts.main(more)
    assert first.value.args == (SAMPLES,)  # samples 0 .. SAMPLES-1 were read back, the new one is computed


def test_the_jacobian_probes_are_the_explicit_jacobian_times_the_probes(tmp_path):
    model = load_model(save_tiny_pipeline(tmp_path / "pipeline")).conditioned("a red square", guidance_scale=3.0)
    t, x = timestep_at(model, 0.5, 10), torch.randn(1, *model.sample_shape, generator=torch.Generator().manual_seed(0))
    probes = torch.randn(3, *x.shape, generator=torch.Generator().manual_seed(1))
    h, jr = sd_prompts.map_at(model, t, x, probes)
    f = h_space(model, t)
    J = torch.func.jacrev(f)(x).reshape(h.numel(), x.numel())
    assert torch.allclose(h, f(x).detach()) and jr.shape == (3, *h.shape)
    assert torch.allclose(jr.reshape(3, -1), probes.reshape(3, -1) @ J.T, atol=1e-4, rtol=1e-4)


def test_the_measures_on_explicit_cases():
    h, jr = torch.tensor([3.0, 4.0]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # h moved by (0, 5): half its norm; every J r doubled: the change is as large as J r itself
    assert sd_prompts.map_change((h, jr), (h + torch.tensor([0.0, 2.5]), 2 * jr)) == pytest.approx((0.5, 1.0))
    q, _ = torch.linalg.qr(torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    frame = q.T.reshape(3, 1, 4, 4)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    mixed = (rotation @ q.T).reshape(3, 1, 4, 4)
    assert sd_prompts.similarity(frame, mixed) == pytest.approx(1.0, abs=1e-12)
    axes = torch.eye(16, dtype=torch.float64).reshape(16, 1, 4, 4)
    assert sd_prompts.similarity(axes[:3], axes[3:6]) == pytest.approx(0.0, abs=1e-12)  # orthogonal spaces
    assert sd_prompts.similarity(axes[:3], axes[2:5]) == pytest.approx(1 / 3, abs=1e-12)  # one of three shared
    response = torch.tensor([[1.0, 0, 0, 0, 0, 0, 3.0], [0, 0, 0, 0, 0, 0, 0], [math.nan] * 7], dtype=torch.float64)
    share, per_direction = sd_prompts.free_share(response, named=["shape"])  # shape is the seventh factor
    assert share == 0.25 and per_direction[0] == 0.25 and math.isnan(per_direction[1]) and math.isnan(per_direction[2])
    words, order, other_words = sd_prompts.scene_words(5)
    assert sorted(order) == sorted(sd_prompts.NAMES) and all(other_words[f] != words[f] for f in words)
    assert sd_prompts.shared_prompt(words, order, other_words, 7) == captions.caption(words)


@pytest.mark.parametrize("argv, message", [
    (["--samples", "1"], "--samples"),
    (["--fractions", "0"], "--fractions"),
    (["--edit-fractions", "1.5"], "--edit-fractions"),
    (["--k", "0"], "--k"),
    (["--shared", "8"], "--shared"),
    (["--named", "7"], "--named"),
    (["--named", "2", "2"], "--named lists a value twice"),
    (["--guidance-named", "0"], "--guidance-named"),
    (["--scales", "3"], "at least two guidance scales"),
    (["--scales", "1", "-1"], "--scales"),
    (["--guidance-scale", "nan"], "--guidance-scale"),
    (["--budgets", "0"], "--budgets"),
    (["--edit", "h"], "--edit"),
    (["--experiments", "tangents"], "--experiments"),
    (["--device", "tpu"], "--device"),
    (["--model", "/no/such/folder"], "no such folder"),
    (["--out", "results"], "--out must be a .json file"),
])
def test_bad_flags_are_refused_before_any_work(argv, message, monkeypatch, capsys, tmp_path):
    def work(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(sd_prompts, "load_model", work)
    with pytest.raises(SystemExit) as stop:
        sd_prompts.main([*argv, *([] if "--out" in argv else ["--out", str(tmp_path / "r.json")])])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_folder_that_is_not_a_pipeline_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sd_prompts, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit):
        sd_prompts.main(["--model", str(tmp_path), "--out", str(tmp_path / "r.json")])
    assert "without model_index.json" in capsys.readouterr().err
