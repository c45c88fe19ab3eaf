"""Writing results so that a killed process leaves either the old complete version or the new one.

- ``atomic_write(path)``: a block writes a temporary file beside ``path``; when the block ends
  without an error the file takes ``path``'s place in one rename (``os.replace``), otherwise it
  is removed. A reader never sees half a file.
- ``atomic_folder(folder)``: the same for a folder of files that belong together (a training
  checkpoint, a read-out's weights and record). The block fills FOLDER.tmp; then a manifest
  (``manifest.json``: every file's size and SHA-256) is written last, and the folder takes
  FOLDER's place by two renames (FOLDER → FOLDER.old, FOLDER.tmp → FOLDER) before FOLDER.old is
  removed. ``complete_folder(folder)`` finds the complete copy whatever the moment of a kill: it
  finishes an interrupted swap, ignores half-written or half-removed copies, and checks the copy
  against its manifest, so a truncated or changed file is refused by name, never trusted.
- ``verified_folder(name, folder, required, fix)``: the same check for a loader (``load_model``'s
  ``unet/`` or Stable Diffusion pipeline folder, ``load_classifier``, ``load_readout``), whose
  message names its parameter and its own fix; the folders shipped in labkit/embedded must have a
  manifest.
- ``write_json(path, value)``: a JSON record (a benchmark's report, a training log) written through
  ``atomic_write``, one line per key or compact, ending in a newline.
- ``write_manifest(folder, names)``: the manifest alone, over files that may lie in subfolders (a
  Stable Diffusion pipeline's components), for a folder that cannot be swapped as one unit.

Both protect against a killed process, not a power cut: there is no fsync (a power cut is not
what a training or analysis job on a shared machine meets; the speed of many small writes is).

Explained in: book/part2-diffusion/10_scaling.ipynb (restartable jobs)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labkit.checks import check_bool, check_folder, check_path, show

MANIFEST = "manifest.json"


class IncompleteFolderError(ValueError):
    """A folder written by ``atomic_folder`` that is damaged: a file missing, truncated or changed."""


def _check_folder(folder: object, required: object, name: str = "folder",
                  files: str = "required") -> tuple[Path, tuple[str, ...]]:
    """``folder`` as a Path that is not a file, ``required`` as a tuple of file names (before any work)."""
    folder = check_folder(name, folder)
    if not isinstance(required, tuple | list) or not all(isinstance(n, str) and n for n in required):
        raise TypeError(f"{files} must be a tuple of file names, got {show(required)}; one file: ('name',)")
    return folder, tuple(required)


def _check_file_path(path: object) -> Path:
    """``path`` as a Path that is not a folder (before any work)."""
    path = check_path("path", path)
    if path.is_dir():
        raise IsADirectoryError(f"path: {str(path)!r} is a folder; give the path of a file")
    return path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path`` atomically.

    ``with atomic_write(out / "results.json") as tmp: tmp.write_text(text)``. The folder is created
    if missing. On an error inside the block the temporary file is removed and the error re-raised.
    """
    path = _check_file_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open with mode 0o666 lets the umask decide the permissions, as for any new file; mkstemp
    # would make every written file readable by its owner only (0600)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, value: object, compact: bool = False) -> Path:
    """Write ``value`` as JSON to ``path`` through ``atomic_write``; returns the path.

    compact=False: indented by one space (a record a reader opens); True: no whitespace at all (the
    many unit files of a resumable benchmark). The text ends in a newline. A value that JSON cannot
    hold raises TypeError, and a folder in place of ``path`` IsADirectoryError, before ``path`` is touched.
    """
    path, compact = _check_file_path(path), check_bool("compact", compact)
    try:
        text = json.dumps(value, separators=(",", ":")) if compact else json.dumps(value, indent=1)
    except (TypeError, ValueError) as err:  # ValueError: a circular reference (NaN is written as NaN)
        raise TypeError(f"value: cannot be written as JSON ({err}); give dicts, lists, str, numbers, "
                        "bools and None (convert tensors and arrays with .tolist())") from err
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sibling(folder: Path, suffix: str) -> Path:
    return folder.with_name(folder.name + suffix)


def write_manifest(folder: str | os.PathLike, names: tuple[str, ...]) -> Path:
    """Write FOLDER/manifest.json over ``names``: each file's size and SHA-256; returns its path.

    names: paths relative to FOLDER, in subfolders too ("unet/config.json"). The manifest itself is
    written atomically. ``atomic_folder`` ends with it; ``labkit.sd_layout.save_pipeline`` writes a
    pipeline's this way, whose folder also holds the training checkpoints and is not swapped whole.
    """
    folder, names = _check_folder(folder, names, files="names")
    outside = [n for n in names if Path(n).is_absolute() or ".." in Path(n).parts or n == MANIFEST]
    if outside:
        raise ValueError(f"names: {show(outside)} are not files inside {str(folder)!r} to list; give paths "
                         f"relative to the folder, without '..' (and not {MANIFEST} itself)")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"names: {show(missing)} are not files in {str(folder)!r}; "
                                "list the files written there")
    files = {n: {"bytes": (folder / n).stat().st_size, "sha256": _sha256(folder / n)} for n in sorted(names)}
    with atomic_write(folder / MANIFEST) as manifest:
        manifest.write_text(json.dumps({"files": files}, indent=1) + "\n")
    return folder / MANIFEST


def manifest_problem(folder: Path, required: tuple[str, ...] = ()) -> str | None:
    """Why ``folder`` is not a complete copy, or None. Without a manifest (a folder written before
    manifests existed) it is complete when every ``required`` file is there."""
    folder, required = _check_folder(folder, required)
    manifest = folder / MANIFEST
    if not manifest.exists():
        missing = [name for name in required if not (folder / name).is_file()]
        return f"{missing[0]} is missing" if missing else None
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its {MANIFEST} is unreadable ({type(err).__name__})"
    for name in sorted(set(required) | set(files)):
        file = folder / name
        if name not in files or not file.is_file():
            return f"{name} is missing" + ("" if name in files else f" from {MANIFEST}")
        if file.stat().st_size != files[name]["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, its manifest says {files[name]['bytes']} (truncated?)"
        if _sha256(file) != files[name]["sha256"]:
            return f"{name} differs from the file that was written (its SHA-256 changed)"
    return None


def _finish_swap(folder: Path, required: tuple[str, ...]) -> None:
    """After a kill between FOLDER → FOLDER.old and FOLDER.tmp → FOLDER: put the newest complete copy back."""
    if folder.exists():
        return
    tmp, old = _sibling(folder, ".tmp"), _sibling(folder, ".old")
    # .tmp only counts with its manifest: without one it may be half written
    if tmp.is_dir() and (tmp / MANIFEST).exists() and manifest_problem(tmp, required) is None:
        tmp.rename(folder)
    elif old.is_dir() and manifest_problem(old, required) is None:
        old.rename(folder)


def _present(folder: Path, required: tuple[str, ...]) -> bool:
    """Whether FOLDER is there once an interrupted swap is finished; warns about incomplete copies."""
    _finish_swap(folder, required)
    if not folder.exists():
        leftovers = [str(p) for p in (_sibling(folder, ".tmp"), _sibling(folder, ".old")) if p.exists()]
        if leftovers:
            warnings.warn(f"ignoring {', '.join(leftovers)}: incomplete (a run was killed while writing it); "
                          f"there is no complete {folder.name} yet", RuntimeWarning, stacklevel=3)
    return folder.exists()


def complete_folder(folder: str | os.PathLike, required: tuple[str, ...] = ()) -> Path | None:
    """The complete copy of a folder written by ``atomic_folder``, or None when there is none yet.

    Finishes a swap that a kill interrupted. Raises IncompleteFolderError, naming the folder and
    the file, when FOLDER itself is damaged (a file missing, truncated or changed since it was
    written). Warns when only an incomplete copy exists (a kill while the first one was written).
    """
    folder, required = _check_folder(folder, required)
    if not _present(folder, required):
        return None
    problem = manifest_problem(folder, required)
    if problem is not None:
        raise IncompleteFolderError(f"{str(folder)!r} is damaged: {problem}. Delete the folder (or restore it) "
                                    "and run again")
    return folder


def verified_folder(name: str, folder: str | os.PathLike, required: tuple[str, ...], fix: str, *,
                    shipped: bool = False, error: type[Exception] = IncompleteFolderError) -> Path | None:
    """``complete_folder`` for a loader: the folder of weights ``name`` names, checked against its manifest.

    Returns None when there is nothing to load (no folder, or a folder from before manifests that
    lacks a ``required`` file): the loader says what is missing. Raises ``error``, naming ``name``,
    the folder, the file and ``fix``, when a file is missing, truncated or changed since it was
    written, or when a ``shipped`` folder (one that comes with labkit) has no manifest to check.
    """
    folder, required = _check_folder(folder, required, name)
    if shipped:
        fix = f"reinstall labkit (in a clone of its repository: git checkout {str(folder)!r}), or {fix}"
    if not _present(folder, required):
        return None
    has_manifest = (folder / MANIFEST).exists()
    if shipped and not has_manifest:
        raise error(f"{name}: {str(folder)!r} has no {MANIFEST}, so its files cannot be checked; {fix}")
    problem = manifest_problem(folder, required)
    if problem is None:
        return folder
    if not has_manifest:
        return None
    raise error(f"{name}: {str(folder)!r} is damaged: {problem}; {fix}")


@contextmanager
def atomic_folder(folder: str | os.PathLike, required: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; on success it replaces ``folder`` as one unit.

    The manifest is written last, then FOLDER → FOLDER.old, FOLDER.tmp → FOLDER, and FOLDER.old
    is removed: a kill at any moment leaves a complete copy that ``complete_folder`` finds.
    ``required``: files the block must have written (checked before the swap).
    """
    folder, required = _check_folder(folder, required)
    tmp, old = _sibling(folder, ".tmp"), _sibling(folder, ".old")
    _finish_swap(folder, required)  # never remove the only complete copy below
    for leftover in (tmp, old):  # from a kill while writing, or while removing the previous copy
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    missing = [name for name in required if not (tmp / name).is_file()]
    if missing:
        raise RuntimeError(f"atomic_folder({str(folder)!r}): the block did not write {missing}")
    write_manifest(tmp, tuple(p.name for p in sorted(tmp.iterdir()) if p.is_file() and p.name != MANIFEST))
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
