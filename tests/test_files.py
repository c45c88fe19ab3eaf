"""labkit.files: a kill at any step of an atomic write leaves the old complete version or the new one."""

import shutil
from pathlib import Path

import pytest

from labkit import files
from labkit.files import IncompleteFolderError, atomic_folder, atomic_write, complete_folder


class Killed(BaseException):
    """What a SIGKILL looks like to the code under test: it stops here, and nothing after runs."""


def test_atomic_write_replaces_the_file_or_leaves_it(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    with atomic_write(path) as tmp:
        tmp.write_text("first")
    assert path.read_text() == "first"
    with pytest.raises(Killed), atomic_write(path) as tmp:
        tmp.write_text("half of the sec")
        raise Killed
    assert path.read_text() == "first" and sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def _write(folder: Path, version: str) -> None:
    with atomic_folder(folder, required=("a.txt", "b.txt")) as tmp:
        (tmp / "a.txt").write_text(version * 100)
        (tmp / "b.txt").write_text(version)


def _version(folder: Path) -> str:
    a, b = (folder / "a.txt").read_text(), (folder / "b.txt").read_text()
    assert a == b * 100, "the two files come from different writes"
    return b


def _killing(monkeypatch, at: int) -> list[str]:
    """Make the ``at``-th file-system step of atomic_folder raise Killed (a rename, a replace, or a removal,
    which is killed half-way: one file gone)."""
    steps: list[str] = []
    rename, replace, rmtree = Path.rename, files.os.replace, shutil.rmtree

    def step(name):
        steps.append(name)
        if len(steps) == at:
            raise Killed

    def killing_rename(self, target):
        step(f"rename {self.name} → {Path(target).name}")
        return rename(self, target)

    def killing_replace(src, dst):
        step(f"replace → {Path(dst).name}")
        return replace(src, dst)

    def killing_rmtree(path, *args, **kwargs):
        if len(steps) + 1 == at:
            next(Path(path).iterdir()).unlink()  # half-way through the removal
        step(f"rmtree {Path(path).name}")
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(Path, "rename", killing_rename)
    monkeypatch.setattr(files.os, "replace", killing_replace)
    monkeypatch.setattr(files.shutil, "rmtree", killing_rmtree)
    return steps


def test_a_kill_at_every_step_of_a_folder_swap_leaves_a_complete_copy(tmp_path, monkeypatch):
    # count the steps of one swap over an existing folder: manifest, two renames, one removal
    _write(tmp_path / "probe", "1")
    with monkeypatch.context() as patch:
        steps = _killing(patch, at=0)
        _write(tmp_path / "probe", "2")
    assert len(steps) == 4, steps
    for at in range(1, len(steps) + 1):
        folder = tmp_path / f"kill{at}" / "checkpoint"
        _write(folder, "1")
        with monkeypatch.context() as patch:
            _killing(patch, at)
            with pytest.raises(Killed):
                _write(folder, "2")
        found = complete_folder(folder, required=("a.txt", "b.txt"))
        assert found == folder and _version(folder) in ("1", "2"), at
        assert _version(folder) == ("1" if at <= 2 else "2"), at  # new once its manifest is there and it is moved
        _write(folder, "3")  # the next write works, whatever was left over
        assert _version(complete_folder(folder)) == "3"
        assert sorted(p.name for p in folder.parent.iterdir()) == ["checkpoint"]


def test_a_kill_while_the_first_copy_is_written_leaves_none_and_says_so(tmp_path):
    folder = tmp_path / "readout"
    with pytest.raises(Killed), atomic_folder(folder) as tmp:
        (tmp / "a.txt").write_text("half")
        raise Killed
    assert complete_folder(folder) is None
    (tmp_path / "readout.tmp").mkdir()  # as a SIGKILL leaves it: no clean-up ran
    (tmp_path / "readout.tmp" / "a.txt").write_text("half")
    with pytest.warns(RuntimeWarning, match="readout.tmp"):
        assert complete_folder(folder, required=("a.txt",)) is None


@pytest.mark.parametrize("damage", ["truncate", "change", "delete", "manifest"])
def test_a_damaged_folder_is_refused_by_name(tmp_path, damage):
    folder = tmp_path / "checkpoint"
    _write(folder, "1")
    if damage == "truncate":
        (folder / "a.txt").write_text("1" * 50)
    elif damage == "change":
        (folder / "a.txt").write_text("2" * 100)
    elif damage == "delete":
        (folder / "b.txt").unlink()
    else:
        (folder / "manifest.json").write_text("{ not json")
    name = {"truncate": "a.txt", "change": "a.txt", "delete": "b.txt", "manifest": "manifest.json"}[damage]
    with pytest.raises(IncompleteFolderError, match=name) as info:
        complete_folder(folder, required=("a.txt", "b.txt"))
    assert "checkpoint" in str(info.value)


def test_a_folder_from_before_manifests_is_read_when_its_files_are_there(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    assert complete_folder(folder, required=("a.txt",)) == folder
    with pytest.raises(IncompleteFolderError, match="b.txt is missing"):
        complete_folder(folder, required=("a.txt", "b.txt"))
