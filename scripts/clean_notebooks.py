"""Keep committed notebooks small and their diffs reviewable.

Policy (see README, "Notebook outputs"): a committed notebook keeps the text outputs of the
cells marked ``# NBVAL_CHECK_OUTPUT`` (nbval compares exactly those) and nothing else: figures,
widget state, execution counts and timing metadata are dropped. The web book re-executes every
notebook, so no output is lost to readers.

    python scripts/clean_notebooks.py book/part1-geometry/*.ipynb   # rewrite in place
    python scripts/clean_notebooks.py --check book                  # exit 1 if any would change
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MARK = "NBVAL_CHECK_OUTPUT"
TEXT_TYPES = ("text/plain",)


def clean_cell(cell: dict) -> dict:
    cell.get("metadata", {}).pop("execution", None)
    if cell["cell_type"] != "code":
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
        return cell
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    cell["execution_count"] = None
    kept = []
    if MARK in source:
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream" and out.get("name") == "stdout":
                kept.append(out)
            elif out["output_type"] in ("execute_result", "display_data"):
                data = {k: v for k, v in out["data"].items() if k in TEXT_TYPES}
                if data:
                    kept.append({"output_type": out["output_type"], "data": data, "metadata": {},
                                 **({"execution_count": None} if out["output_type"] == "execute_result" else {})})
    cell["outputs"] = kept
    if kept:  # nbval treats a cell with outputs but no execution count as "unrun" and fails
        cell["execution_count"] = 1
        for out in kept:
            if out["output_type"] == "execute_result":
                out["execution_count"] = 1
    return cell


def clean(nb: dict) -> dict:
    nb["cells"] = [clean_cell(c) for c in nb["cells"]]
    nb["metadata"].pop("widgets", None)
    nb["metadata"]["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb


def dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="report notebooks that are not clean")
    args = parser.parse_args()
    files = [p for path in args.paths for p in (sorted(path.rglob("*.ipynb")) if path.is_dir() else [path])]
    files = [f for f in files if ".ipynb_checkpoints" not in f.parts and "_build" not in f.parts]
    dirty = []
    for f in files:
        text = f.read_text()
        new = dump(clean(json.loads(text)))
        if new != text:
            dirty.append(f)
            if not args.check:
                f.write_text(new)
    for f in dirty:
        print(("not clean: " if args.check else "cleaned: ") + str(f))
    return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main())
