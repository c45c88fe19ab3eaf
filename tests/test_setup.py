"""From a fresh machine: `make test` finds or installs the browser first, every chapter opens with
the install cell its Colab button needs, Binder builds from the repository's own files.

The install cell is run for real in a fresh venv (no network: it installs this working copy,
``--no-deps``); on Colab it installs from the repository (the default branch, or in the published book
the commit that built it), which cannot be reached here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
# scripts/install_cell.py is a script, not a package: load it from its file
_spec = importlib.util.spec_from_file_location("install_cell", REPO / "scripts" / "install_cell.py")
install_cell = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install_cell)

ENSURE = REPO / "scripts" / "ensure_browser.sh"
FAKE_CHROMIUM = "#!/bin/sh\necho fake chromium\n"


def run_ensure(path_dir: Path, chromium: Path) -> subprocess.CompletedProcess:
    """scripts/ensure_browser.sh with only ``path_dir`` on PATH and $CHROMIUM pointing at ``chromium``."""
    env = {"PATH": str(path_dir), "CHROMIUM": str(chromium), "HOME": str(path_dir)}
    return subprocess.run(["/bin/bash", str(ENSURE)], check=False, env=env, capture_output=True, text=True, timeout=60)


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


# --- the browser check that `make test` runs first -------------------------------------------------

def test_make_test_checks_the_browser_before_any_test():
    makefile = (REPO / "Makefile").read_text()
    test_rule = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert test_rule.split(":", 1)[1].split()[0] == "browser-check", test_rule
    assert "bash scripts/ensure_browser.sh" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_no_browser_and_no_way_to_install_stops_with_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    result = run_ensure(bin_dir, tmp_path / "no-chromium")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "sudo apt-get install -y chromium" in lines[0] and "CHROMIUM=" in lines[0]


def test_a_chromium_on_path_or_at_chromium_is_found(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    at_variable = executable(tmp_path / "my-chromium", FAKE_CHROMIUM)
    result = run_ensure(bin_dir, at_variable)
    assert result.returncode == 0 and str(at_variable) in result.stdout, result.stderr
    on_path = executable(bin_dir / "chromium", FAKE_CHROMIUM)
    result = run_ensure(bin_dir, tmp_path / "no-chromium")
    assert result.returncode == 0 and str(on_path) in result.stdout, result.stderr


def test_a_missing_browser_is_installed_with_apt_get(tmp_path):
    """With apt-get and root (or passwordless sudo), the script installs `chromium` and finds it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    target, log = tmp_path / "installed-chromium", tmp_path / "apt.log"
    # a stand-in apt-get: records its arguments; `install chromium` puts a browser at $CHROMIUM
    executable(bin_dir / "apt-get", f"""#!{sys.executable}
import os, sys
with open({str(log)!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "install" and "chromium" in sys.argv:
    with open({str(target)!r}, "w") as f:
        f.write({FAKE_CHROMIUM!r})
    os.chmod({str(target)!r}, 0o755)
""")
    # for a non-root run: a passwordless sudo that runs its command
    executable(bin_dir / "sudo", f"""#!{sys.executable}
import os, sys
args = [a for a in sys.argv[1:] if a != "-n"]
sys.exit(0) if args == ["true"] else os.execvp(args[0], args)
""")
    result = run_ensure(bin_dir, target)
    assert result.returncode == 0, result.stderr
    assert f"Chromium for the browser tests: {target}" in result.stdout
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq chromium"]


def test_browser_tests_find_chromium_the_same_way(tmp_path, monkeypatch):
    from browser_support import find_chromium

    at_variable = executable(tmp_path / "my-chromium", FAKE_CHROMIUM)
    monkeypatch.setenv("CHROMIUM", str(at_variable))
    assert find_chromium() == str(at_variable)
    on_path = executable(tmp_path / "chromium", FAKE_CHROMIUM)
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() == str(on_path)


# --- the install cell that makes the Colab button work ---------------------------------------------

def test_every_chapter_opens_with_the_same_current_install_cell():
    assert len(install_cell.CHAPTERS) >= 14
    expected = install_cell.cell_source()
    for path in install_cell.CHAPTERS:
        notebook = json.loads(path.read_text())
        first = install_cell.first_code_cell(notebook)
        assert "".join(first["source"]) == expected, f"{path}: run `python scripts/install_cell.py`"
        assert first["metadata"].get("tags") == ["remove-cell"], path
        assert first["outputs"] == [], path
    assert 3 <= len(expected.splitlines()) <= 6


SHA = "0123456789abcdef0123456789abcdef01234567"


def test_the_committed_cell_installs_the_default_branch_with_the_book_extra():
    url = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
    assert install_cell.install_spec() == f"labkit[book]@git+{url}"  # no ref: the default branch always exists
    assert install_cell.install_spec(ref=SHA) == f"labkit[book]@git+{url}@{SHA}"
    assert f'"{install_cell.install_spec()}"' in install_cell.cell_source()
    requirement = Requirement(install_cell.install_spec(ref=SHA))  # what pip will parse
    assert (requirement.name, requirement.extras, requirement.url) == ("labkit", {"book"}, f"git+{url}@{SHA}")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "book" in extras


def test_the_pages_build_writes_its_commit_into_every_cell_and_refuses_a_name(tmp_path, monkeypatch, capsys):
    chapters = []
    for path in install_cell.CHAPTERS[:2]:
        copy = tmp_path / path.name
        copy.write_text(path.read_text())
        chapters.append(copy)
    monkeypatch.setattr(install_cell, "CHAPTERS", chapters)
    monkeypatch.setattr(install_cell, "REPO", tmp_path)
    assert install_cell.main(["--check"]) == 0
    assert install_cell.main(["--ref", SHA]) == 0
    assert install_cell.main(["--check", "--ref", SHA]) == 0 and install_cell.main(["--check"]) == 1
    for path in chapters:
        first = install_cell.first_code_cell(json.loads(path.read_text()))
        assert f'"labkit[book]@git+https://github.com/curved-latents/curved-latents@{SHA}"' in "".join(first["source"])
    for name in ("main", "v0.1.0", "HEAD", SHA.upper()):
        with pytest.raises(SystemExit):
            install_cell.main(["--ref", name])
        assert "must be a commit id" in capsys.readouterr().err


def test_the_install_cell_does_nothing_where_labkit_is_installed():
    with mock.patch("subprocess.run") as run, mock.patch("subprocess.check_call") as check_call:
        exec(compile(install_cell.cell_source(), "install-cell", "exec"), {})  # noqa: S102 (the cell, as Jupyter runs it)
    run.assert_not_called()
    check_call.assert_not_called()


@pytest.mark.slow  # about a minute on a busy 2-core machine: a venv, a wheel, an install
def test_the_install_cell_installs_labkit_in_a_fresh_venv(tmp_path):
    """A fresh venv (no labkit, nothing but pip) runs only the cell, installing a wheel of this working copy."""
    # the wheel is built here from a copy of what the build reads (so nothing is written into the repo):
    # the fresh venv need not have setuptools, and nothing is downloaded
    source, wheels = tmp_path / "source", tmp_path / "wheels"
    source.mkdir()
    (source / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    subprocess.run(["cp", "-r", str(REPO / "labkit"), str(source / "labkit")], check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--wheel-dir", str(wheels), str(source)], check=True, timeout=300)
    (wheel,) = wheels.glob("labkit-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    check = 'import importlib.util; print("labkit" if importlib.util.find_spec("labkit") else "none")'
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "LABKIT_INSTALL_SPEC": f"{wheel} --no-deps"}
    # cwd: outside the repository, whose labkit/ folder `python -c` would otherwise import
    before = subprocess.run([python, "-c", check], check=False, env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert before.stdout.strip() == "none"
    cell = install_cell.cell_source() + "\n" + 'print(importlib.util.find_spec("labkit").origin)\n'
    after = subprocess.run([python, "-c", cell], check=False, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert after.returncode == 0, after.stderr
    assert Path(after.stdout.strip()).is_relative_to(venv), after.stdout


# --- Binder -------------------------------------------------------------------------------------------

def requirement_lines(path: Path) -> list[str]:
    """The lines of a pip requirements file, comments and blanks dropped, nested ``-r`` files inlined
    (pip resolves a nested file relative to the file that names it)."""
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            lines += requirement_lines(path.parent / line.removeprefix("-r ").strip())
        elif line:
            lines.append(line)
    return lines


def test_binder_installs_the_repository_with_a_cpu_torch():
    """repo2docker reads binder/ (runtime.txt, requirements.txt). A local reference (-r, -e) makes it copy the
    whole repository before `pip install -r binder/requirements.txt` from its root, so `-e .` installs labkit."""
    assert (REPO / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    lines = requirement_lines(REPO / "binder" / "requirements.txt")
    assert "-e ." in lines
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines  # torch +cpu wins over the CUDA build
    assert any(line.startswith("torch") and "<2.14" in line for line in lines)
    assert lines == list(dict.fromkeys(lines)), "a requirement is listed twice"
    assert requirement_lines(REPO / "requirements.txt") == [line for line in lines if "whl/cpu" not in line]


def test_the_pages_workflow_builds_with_the_make_targets():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as True
    assert triggers["push"]["branches"] == ["main"]
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    runs = "\n".join(step.get("run", "") for step in steps)
    make_targets = {word for line in runs.splitlines() if line.strip().startswith("make ") for word in line.split()[1:]}
    assert {"book", "student", "singlehtml"} <= make_targets, runs
    uses = [step.get("uses", "") for step in steps]
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses)
    assert any(u.startswith("actions/deploy-pages") for u in uses)
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    # the published book installs the code that built it: its cells are written with this commit before the build
    ref_line = next(line for line in runs.splitlines() if "install_cell.py" in line and "--ref" in line)
    assert "${{ github.sha }}" in ref_line and "--check" not in ref_line
    assert runs.index(ref_line) < runs.index("make book")
    assert "v0.1.0" not in runs and "refs/tags" not in runs


def test_lint_and_unit_tests_run_on_every_push_and_pull_request():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "tests.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]
    assert set(triggers) == {"push", "pull_request"} and not (triggers["push"] or {}).get("branches")
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "make lint" in runs and "make unit" in runs
    assert workflow["permissions"] == {"contents": "read"}
