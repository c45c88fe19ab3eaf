"""labkit.files: a kill at any step of an atomic write leaves the old complete version or the new one; the
loaders refuse a shipped folder whose files differ from its manifest."""

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from labkit import classifier, files, models, readout
from labkit.files import (
    IncompleteFolderError,
    atomic_folder,
    atomic_write,
    complete_folder,
    verified_folder,
    write_json,
)


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


def test_write_json_round_trips_indented_or_compact_and_never_leaves_half_a_record(tmp_path):
    record = {"a": [1, 2.5, None], "b": {"c": "é", "d": True}}
    path = write_json(tmp_path / "sub" / "r.json", record)
    text = path.read_text()
    assert json.loads(text) == record and text.endswith("}\n") and '\n "a": [' in text
    compact = write_json(tmp_path / "c.json", record, compact=True).read_text()
    assert json.loads(compact) == record and compact == json.dumps(record, separators=(",", ":")) + "\n"
    with pytest.raises(TypeError, match="value"):  # a tensor left in a report: the old record stays
        write_json(path, {"a": object()})
    assert path.read_text() == text and sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_gives_a_new_file_the_umask_s_permissions(tmp_path, umask):
    # a temporary file from mkstemp is 0600 whatever the umask: results and manifests written through it
    # were unreadable to a shared group
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~umask

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


def test_a_file_in_place_of_the_folder_is_refused_before_any_work(tmp_path):
    path = tmp_path / "checkpoint"
    path.write_text("a file someone put there")
    for call in (lambda: atomic_folder(path).__enter__(), lambda: complete_folder(path),
                 lambda: verified_folder("path", path, ("a.txt",), "fix")):
        with pytest.raises(NotADirectoryError, match="is a file, not a folder") as info:
            call()
        assert repr(str(path)) in str(info.value)
    # nothing was replaced, created or removed
    assert path.read_text() == "a file someone put there" and [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


@pytest.mark.parametrize("damage", ["truncate", "change", "no manifest"])
def test_verified_folder_names_the_parameter_the_file_and_the_fix(tmp_path, damage):
    folder = tmp_path / "classifier"
    _write(folder, "1")
    assert verified_folder("path", folder, ("a.txt", "b.txt"), "train it again", shipped=True) == folder
    data = bytearray((folder / "a.txt").read_bytes())
    if damage == "truncate":
        (folder / "a.txt").write_bytes(data[:-1])
    elif damage == "change":  # one byte: same size, other content
        data[0] ^= 1
        (folder / "a.txt").write_bytes(data)
    else:
        (folder / "manifest.json").unlink()
        # a folder from before manifests is still read where it is not shipped with labkit
        assert verified_folder("path", folder, ("a.txt", "b.txt"), "train it again") == folder
    needle = {"truncate": "a.txt has 99 bytes", "change": "a.txt differs", "no manifest": "has no manifest.json"}
    with pytest.raises(ValueError, match=needle[damage]) as info:
        verified_folder("path", folder, ("a.txt", "b.txt"), "train it again", shipped=True)
    message = str(info.value)
    assert message.startswith("path: ") and str(folder) in message and "reinstall labkit" in message
    assert message.endswith("train it again")


def test_verified_folder_is_none_where_there_is_nothing_to_load(tmp_path):
    assert verified_folder("path", tmp_path / "nowhere", ("a.txt",), "fix", shipped=True) is None
    old = tmp_path / "old"
    old.mkdir()  # no manifest, and not the files: nothing to load, the loader says what is missing
    assert verified_folder("path", old, ("a.txt",), "fix") is None
    with pytest.raises(KeyError, match="fix"):  # the error type is the loader's
        verified_folder("path", old, ("a.txt",), "fix", shipped=True, error=KeyError)


def _shipped_copy(root: Path, monkeypatch, what: str) -> tuple[Path, Callable[[], object], str]:
    """A copy of a folder shipped in labkit/embedded that its loader takes for the shipped one:
    the copy's weights file, the loader, and the command the loader's message gives to train it again."""
    if what == "model":
        copy = shutil.copytree(models.EMBEDDED_MODELS["shapes"], root / "labkit" / "embedded" / "shapes" / "ddpm")
        monkeypatch.setattr(models, "EMBEDDED_MODEL", root / "labkit" / "embedded")
        monkeypatch.setitem(models.EMBEDDED_MODELS, "shapes", copy)
        return (copy / "unet" / "diffusion_pytorch_model.safetensors", lambda: models.load_model("shapes"),
                "python -m labkit.train ddpm --data shapes")
    if what == "classifier":
        copy = shutil.copytree(classifier.EMBEDDED_CLASSIFIER, root / "classifier")
        monkeypatch.setattr(classifier, "EMBEDDED_CLASSIFIER", copy)
        return copy / "model.safetensors", classifier.load_classifier, "python -m labkit.train classifier"
    copy = shutil.copytree(readout.EMBEDDED_READOUT, root / "readout")
    monkeypatch.setattr(readout, "EMBEDDED_READOUT", copy)
    return copy / "model.safetensors", readout.load_readout, "python -m labkit.readout"


@pytest.mark.parametrize("damage", ["one byte", "truncated", "no manifest"])
@pytest.mark.parametrize("what", ["model", "classifier", "readout"])
def test_a_damaged_shipped_folder_is_refused_by_its_loader(tmp_path, monkeypatch, what, damage):
    weights, load, retrain = _shipped_copy(tmp_path, monkeypatch, what)
    load()  # the copy as shipped loads
    data = bytearray(weights.read_bytes())
    if damage == "one byte":  # a weight's exponent: the file still parses, the weights silently change
        data[-1] ^= 1
        weights.write_bytes(data)
    elif damage == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    else:
        (weights.parent / "manifest.json").unlink()
    needle = {"one byte": f"{weights.name} differs", "truncated": f"{weights.name} has {len(data) // 2} bytes",
              "no manifest": "has no manifest.json"}[damage]
    with pytest.raises((ValueError, models.ModelUnavailableError), match=needle) as info:
        load()
    message = str(info.value)
    assert message.startswith(("path: ", "name_or_path: ")) and repr(str(weights.parent)) in message
    assert "reinstall labkit" in message and retrain in message
