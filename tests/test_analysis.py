"""python -m labkit analyze: the statistics against explicit computations, restarts, and torchrun on CPU."""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import labkit
from labkit.__main__ import main
from labkit.analysis import KILL_ENV, cross_sample_similarity, radial_spectrum, ranks
from labkit.diffusion import posterior_mean, sample_at
from labkit.models import load_model

ARGS = ["--samples", "2", "--fraction", "0.4", "1.0", "--k", "2", "--steps", "10"]
REPO = Path(labkit.__file__).parent.parent


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as under torchrun, so one process and two ranks do the same arithmetic
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def single(tiny_dir, tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("single")
    main(["analyze", "--model", str(tiny_dir), *ARGS, "--out", str(out)])
    return out


def unit_files(out: Path) -> dict[str, int]:
    """unit file name → the time it was written (recorded inside the file)."""
    stamps = {}
    for path in sorted((out / "units").glob("*.safetensors")):
        with safe_open(str(path), "pt") as file:
            stamps[path.name] = int(file.metadata()["written_ns"])
    return stamps


def torchrun(tiny_dir, out, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop(KILL_ENV, None)
    if kill:
        env[KILL_ENV] = kill
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "labkit", "analyze", "--model", str(tiny_dir), *ARGS, "--out", str(out)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def assert_same_results(a: dict, b: dict) -> None:
    assert [(u["sample"], u["fraction"]) for u in a["units"]] == [(u["sample"], u["fraction"]) for u in b["units"]]
    for ua, ub in zip(a["units"], b["units"]):
        assert ua["timestep"] == ub["timestep"] and ua["posterior_mean_rank"] == ub["posterior_mean_rank"]
        torch.testing.assert_close(torch.tensor(ua["sigma"]), torch.tensor(ub["sigma"]), rtol=1e-5, atol=0)
        torch.testing.assert_close(torch.tensor(ua["frequency_shares"]), torch.tensor(ub["frequency_shares"]),
                                   rtol=0, atol=1e-3)
    for ca, cb in zip(a["cross_sample"], b["cross_sample"]):
        assert ca["fraction"] == cb["fraction"] and ca["pairs"] == cb["pairs"]
        assert math.isclose(ca["mean"], cb["mean"], abs_tol=1e-4)


def test_radial_spectrum_of_a_pure_wave_and_parseval():
    rows = torch.arange(16.0)
    wave = torch.cos(2 * math.pi * 3 * rows / 16)[None, :].expand(16, 16)  # 3 cycles across the image
    shares = radial_spectrum(torch.stack([wave / wave.norm()])[:, None])
    assert shares.shape == (1, 9)
    torch.testing.assert_close(shares[0, 3], torch.tensor(1.0, dtype=torch.float64))
    noise = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(radial_spectrum(noise).sum(1), torch.ones(4, dtype=torch.float64))
    # one bright pixel: |v̂| = 1 at every frequency, so each ring's share is its count of frequencies / (H W)
    pixel = torch.zeros(1, 1, 16, 16)
    pixel[0, 0, 5, 9] = 1.0
    k = torch.fft.fftfreq(16, 1 / 16)
    ring = (k[:, None] ** 2 + k[None, :] ** 2).sqrt().round().clamp_max(8).long().flatten()
    torch.testing.assert_close(radial_spectrum(pixel)[0], torch.bincount(ring).double() / 256)
    for bad, message in ((wave, "v must have shape"), (torch.zeros(2, 1, 4, 4), "v.0. is zero")):
        with pytest.raises(ValueError, match=message):
            radial_spectrum(bad)


def test_cross_sample_similarity_on_explicit_subspaces():
    e = torch.eye(4)
    a, b = e[[0, 1]], e[[0, 2]]
    c = torch.stack([(e[0] + e[1]) / 2**0.5, e[2]])
    # cos² of the principal angles: a, b share e1 only: (1 + 0) / 2; a, c share (e1 + e2)/√2 only: 1/2;
    # b, c share e3 and meet at 45° in the rest: (1 + 1/2) / 2
    stats = cross_sample_similarity([a, b, c])
    assert stats["pairs"] == 3 and stats["random_baseline"] == 2 / 4
    torch.testing.assert_close(torch.tensor(stats["values"]), torch.tensor([0.5, 0.5, 0.75]))
    assert math.isclose(stats["mean"], 1.75 / 3, rel_tol=1e-6) and stats["min"] == stats["values"][0]
    assert cross_sample_similarity([a]) == {"pairs": 0, "values": [], "random_baseline": 0.5}
    for bad, error, message in (([], TypeError, "vs must be a non-empty list"), ([a, "b"], TypeError, "vs.1."),
                                ([a, e[:3]], ValueError, "vs.1. has shape")):
        with pytest.raises(error, match=message):
            cross_sample_similarity(bad)


def test_rank_definitions_on_known_singular_values():
    sigma = torch.tensor([10.0, 1.0, 0.5, 0.001])
    # σ_i > 1e-3 σ_1 = 0.01: three; 99% of Σσ² = 101.25…: σ_1² = 100 is 98.8%, with σ_2 99.75%: two.
    assert ranks(sigma) == {"rank_rel": 3, "rank_energy": 2}


def test_analyze_writes_one_record_per_unit_with_checked_statistics(single, tiny_dir):
    results = json.loads((single / "results.json").read_text())
    assert len(results["units"]) == 4 and results["k"] == 2
    assert {(u["sample"], u["fraction"]) for u in results["units"]} == {(s, f) for s in (0, 1) for f in (0.4, 1.0)}
    model = load_model(str(tiny_dir))
    for unit in results["units"]:
        assert len(unit["sigma"]) == 2 and unit["sigma"][0] >= unit["sigma"][1] > 0
        assert unit["residual_max"] <= 1e-4
        assert all(math.isclose(sum(s), 1.0, rel_tol=1e-9) for s in unit["frequency_shares"])
    # The posterior-mean rank from the explicit Jacobian, computed here independently.
    unit = results["units"][0]
    x = sample_at(model, unit["sample"], unit["timestep"], 10).x_t
    jac = torch.autograd.functional.jacobian(posterior_mean(model, unit["timestep"]), x).reshape(64, 64)
    assert unit["posterior_mean_rank"]["rank_rel"] == ranks(torch.linalg.svdvals(jac.double()))["rank_rel"]
    for stats in results["cross_sample"]:
        assert stats["pairs"] == 1 and 0.0 <= stats["min"] <= stats["mean"] <= stats["max"] <= 1.0 + 1e-9
        assert stats["random_baseline"] == 2 / 64


def test_rerun_skips_finished_units_and_redoes_half_written_ones(single, tiny_dir):
    before = unit_files(single)
    victim = sorted(before)[1]
    (single / "units" / victim).unlink()
    (single / "units" / f"{Path(victim).stem}abc.tmp").write_bytes(b"half a unit")  # a crash mid-write
    main(["analyze", "--model", str(tiny_dir), *ARGS, "--out", str(single)])
    after = unit_files(single)
    assert after.keys() == before.keys()
    assert [name for name in after if after[name] != before[name]] == [victim]


def test_bad_flags_are_usage_errors(tmp_path, capsys):
    for flags, message in ((["--k", "51"], "argument --k: must be in 1..50"),
                           (["--samples", "0"], "argument --samples: must be"),
                           (["--fraction", "0"], "argument --fraction: must be"),
                           (["--fraction", "0.5", "0.5"], "must be distinct"),
                           (["--t", "0.5"], "renamed: use --fraction"),
                           (["--to", "0.5"], "unrecognized arguments: --to")):  # no abbreviation reads as --tol
        with pytest.raises(SystemExit) as exit_:
            main(["analyze", *flags, "--out", str(tmp_path)])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_two_ranks_give_the_results_of_one_and_survive_a_killed_rank(single, tiny_dir, tmp_path):
    reference = json.loads((single / "results.json").read_text())
    two = torchrun(tiny_dir, tmp_path / "two")
    assert two.returncode == 0, two.stderr[-2000:]
    assert_same_results(json.loads((tmp_path / "two" / "results.json").read_text()), reference)
    ranks_used = {json.loads(safe_open(str(p), "pt").metadata()["record"])["rank"]
                  for p in (tmp_path / "two" / "units").glob("*.safetensors")}
    assert ranks_used == {0, 1}

    # Rank 1 dies (SIGKILL) right after its first unit; torchrun stops the other rank.
    crashed = torchrun(tiny_dir, tmp_path / "crash", kill="1:1")
    assert crashed.returncode != 0 and not (tmp_path / "crash" / "results.json").exists()
    survivors = unit_files(tmp_path / "crash")
    assert 1 <= len(survivors) < 4
    start = time.time_ns()
    again = torchrun(tiny_dir, tmp_path / "crash")
    assert again.returncode == 0, again.stderr[-2000:]
    final = unit_files(tmp_path / "crash")
    # Complete, the units of the first run untouched, the others computed once in the second.
    assert len(final) == 4
    assert all(final[name] == stamp for name, stamp in survivors.items())
    assert all(stamp > start for name, stamp in final.items() if name not in survivors)
    assert_same_results(json.loads((tmp_path / "crash" / "results.json").read_text()), reference)


def test_a_rerun_with_other_options_never_reuses_the_old_units(single, tiny_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(single, out)
    before = unit_files(out)
    main(["analyze", "--model", str(tiny_dir), *ARGS[:-4], "--k", "1", "--steps", "10", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert results["k"] == 1 and all(len(u["sigma"]) == 1 for u in results["units"])
    after = unit_files(out)
    assert len(after) == 8 and all(after[name] == stamp for name, stamp in before.items())  # old units kept, unused
    # the same options again: every unit reused, results as before
    main(["analyze", "--model", str(tiny_dir), *ARGS, "--out", str(out)])
    assert unit_files(out) == after
    assert_same_results(*(json.loads((folder / "results.json").read_text()) for folder in (out, single)))


@pytest.mark.parametrize("damage", [b"", b"\x00" * 40, "truncate"])
def test_a_damaged_unit_is_named_and_recomputed(single, tiny_dir, tmp_path, damage):
    out = tmp_path / "out"
    shutil.copytree(single, out)
    victim = sorted((out / "units").glob("*.safetensors"))[2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2] if damage == "truncate" else damage)
    with pytest.warns(RuntimeWarning, match=victim.name):
        main(["analyze", "--model", str(tiny_dir), *ARGS, "--out", str(out)])
    assert victim.read_bytes() != b"" and len(victim.read_bytes()) > 100
    assert_same_results(*(json.loads((folder / "results.json").read_text()) for folder in (out, single)))


def test_merge_names_a_unit_damaged_after_the_check(single, tmp_path):
    from labkit.analysis import Job, merge

    out = tmp_path / "out"
    shutil.copytree(single, out)
    key = json.loads((out / "results.json").read_text())["unit_key"]
    victim = sorted((out / "units").glob("*.safetensors"))[0]
    victim.write_bytes(b"")
    with pytest.raises(ValueError, match=victim.name):
        merge(Job(None, 2, (0.4, 1.0), 2, out, 10), key)


def test_a_foreign_results_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("labkit.analysis.load_model", lambda *a, **k: calls.append(a))
    (tmp_path / "results.json").write_text('{"accuracy": 0.97}')
    for out in (str(tmp_path), ""):
        with pytest.raises(SystemExit) as exit_:
            main(["analyze", *ARGS, "--out", out])
        assert exit_.value.code == 2 and "argument --out" in capsys.readouterr().err
    assert calls == [] and (tmp_path / "results.json").read_text() == '{"accuracy": 0.97}'
