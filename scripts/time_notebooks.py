"""Measure how long each notebook of the book takes to run on this machine's CPU, and write the
table into the instructor guide.

    python scripts/time_notebooks.py                      # every notebook under book/
    python scripts/time_notebooks.py book/part1-geometry  # some of them (the others keep their rows)
    python scripts/time_notebooks.py --save-outputs book  # and refresh the checked outputs nbval compares

Each notebook is executed top to bottom with nbclient in a fresh kernel, in its own folder (as
the book build runs it); the wall-clock time from kernel start to the last cell is measured. The
table between the two marker comments in book/appendices/instructor_guide.md is rewritten; rows of
notebooks not run this time are kept. A notebook that fails is reported and makes the script exit
with status 1 (its row says so). With ``--save-outputs`` each notebook that ran is written back
through scripts/clean_notebooks.py's policy, so its ``NBVAL_CHECK_OUTPUT`` outputs are this run's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import nbformat
from clean_notebooks import clean, dump
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "book" / "appendices" / "instructor_guide.md"
START, END = "<!-- notebook-times:start -->", "<!-- notebook-times:end -->"
ROW = re.compile(r"^\| (?P<title>.*?) \| `(?P<path>[^`]+)` \| (?P<time>[^|]+) \|$")


def title_of(notebook) -> str:
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "(untitled)"


def run(path: Path, timeout: int, save_outputs: bool = False) -> tuple[str, float | None]:
    """Execute one notebook; return its title and the seconds it took (None if it failed).

    With save_outputs, a notebook that ran is written back cleaned (see clean_notebooks.py)."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    try:
        client.execute()
    except Exception as error:  # report and go on with the others
        print(f"FAILED {path.relative_to(REPO)}: {type(error).__name__}: {str(error)[-500:]}", file=sys.stderr)
        return title_of(notebook), None
    seconds = time.perf_counter() - started
    if save_outputs:
        path.write_text(dump(clean(json.loads(nbformat.writes(notebook)))))
    return title_of(notebook), seconds


def existing_rows(text: str) -> dict[str, tuple[str, str]]:
    """path -> (title, time cell) from the table now in the guide."""
    rows = {}
    if START in text and END in text:
        for line in text.split(START, 1)[1].split(END, 1)[0].splitlines():
            if match := ROW.match(line.strip()):
                rows[match["path"]] = (match["title"], match["time"].strip())
    return rows


def table(rows: dict[str, tuple[str, str]]) -> str:
    cores = os.cpu_count()
    when = datetime.date.today().isoformat()
    lines = [
        f"Measured on {when}: {cores} CPU cores, Python {platform.python_version()}, "
        "one fresh kernel per notebook (`python scripts/time_notebooks.py`).",
        "",
        "| Chapter | Notebook | Wall-clock time (s) |",
        "|---|---|---|",
    ]
    lines += [f"| {title} | `{path}` | {seconds} |" for path, (title, seconds) in sorted(rows.items())]
    total = sum(float(seconds) for _, seconds in rows.values() if re.fullmatch(r"[\d.]+", seconds))
    lines += ["", f"Total: {total:.0f} s."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[REPO / "book"], help="notebooks or folders")
    parser.add_argument("--guide", type=Path, default=GUIDE, help="the page whose table is rewritten")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    parser.add_argument("--save-outputs", action="store_true", help="write each executed notebook back, cleaned")
    args = parser.parse_args()
    notebooks = sorted(
        notebook
        for path in args.paths
        for notebook in (path.resolve().rglob("*.ipynb") if path.is_dir() else [path.resolve()])
        if ".ipynb_checkpoints" not in notebook.parts and "_build" not in notebook.parts
    )
    if not notebooks:
        raise SystemExit(f"no notebooks found in {', '.join(map(str, args.paths))}")
    text = args.guide.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{args.guide} has no table markers: put {START} and {END} where the table goes")

    rows = {path: row for path, row in existing_rows(text).items() if (REPO / path).exists()}
    failed = []
    for path in notebooks:
        relative = str(path.relative_to(REPO))
        print(f"running {relative} …", flush=True)
        title, seconds = run(path, args.timeout, args.save_outputs)
        rows[relative] = (title, "failed" if seconds is None else f"{seconds:.0f}")
        if seconds is None:
            failed.append(relative)
        else:
            print(f"  {seconds:.1f} s", flush=True)

    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    args.guide.write_text(f"{before}{START}\n{table(rows)}\n{END}{after}")
    print(f"wrote {len(rows)} rows to {args.guide}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
