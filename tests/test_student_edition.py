"""The student edition (`make student`): every exercise of the full edition, none of the solutions
(gated ones, with their code cells, included), and no notebook executed a second time.

The build tests (marked slow) need the full edition (`make book` -> _build/html; `make test` builds
it first); the tests of `without_solutions` and `page_without_solutions`, which drop the gated solutions from
notebooks and markdown pages, need nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from book_toc import toc_pages
from bs4 import BeautifulSoup
from build_student_edition import page_without_solutions, without_solutions
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

BOOK = Path(os.environ.get("CURVED_LATENTS_BOOK", Path(__file__).resolve().parent.parent))
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_student_edition.py"
FULL = BOOK / "_build" / "html"
STUDENT = BOOK / "_build" / "student" / "_build" / "html"


def words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def exercises_and_solutions(page: Path) -> tuple[list[str], list[str], list[str]]:
    """Exercise titles, solution bodies (text without the "Solution to …" title) and the code of the
    code cells inside solutions (a gated solution's) of a page."""
    soup = BeautifulSoup(page.read_text(), "html.parser")
    exercises = [words(div.select_one(".admonition-title").get_text()) for div in soup.select("div.exercise")]
    solutions, code = [], []
    for div in soup.select("div.solution"):
        title = div.select_one(".admonition-title")
        if title:
            title.extract()
        solutions.append(words(div.get_text()))
        code += [words(cell.get_text()) for cell in div.select("div.cell_input")]
    return exercises, solutions, code


GATED = ["# Chapter", "```{exercise} Add\n:label: ex-add\nWhat is 1 + 1?\n```",
         "```{solution-start} ex-add\n:class: dropdown\n```\nThe cell below prints it.", "print(1 + 1)",
         "Two, as the cell says.", "```{solution-end}\n```", "## Next section", "x = 1",
         "```{solution} ex-add\nA solution the directive holds, left to hide_solutions.\n```"]


def notebook(*sources: str):
    """A notebook of one cell per source: code cells for the code (`print(…)`, `x = …`), markdown for the rest."""
    return new_notebook(cells=[new_code_cell(text) if text.startswith(("print", "x =")) else new_markdown_cell(text)
                               for text in sources])


def test_without_solutions_drops_a_gated_solution_and_keeps_every_other_cell():
    book = notebook(*GATED)
    stripped = without_solutions(book)
    assert [cell.source for cell in stripped.cells] == [GATED[0], GATED[1], GATED[6], GATED[7], GATED[8]]
    assert [cell.cell_type for cell in stripped.cells] == ["markdown", "markdown", "markdown", "code", "markdown"]
    assert not any("print(1 + 1)" in cell.source or "solution-start" in cell.source for cell in stripped.cells)
    assert len(book.cells) == len(GATED), "the notebook given was changed"
    nbformat.validate(stripped)


def test_without_solutions_drops_every_solution_also_one_in_a_single_cell_or_colon_fenced():
    one_cell = "```{solution-start} ex-add\n```\nTwo.\n\n```{solution-end}\n```"
    colons = [":::{solution-start} ex-add\n:::\nThe code:", "print(2)", ":::{solution-end}\n:::\n"]
    stripped = without_solutions(notebook("Before", one_cell, "Between", *colons, *GATED[2:6], "After"))
    assert [cell.source for cell in stripped.cells] == ["Before", "Between", "After"]


@pytest.mark.parametrize("sources, error", [
    (GATED[:5], "cell 2: a solution-start without its solution-end"),
    (GATED[:3] + GATED[2:6], "cell 3: a solution-start before the solution-end of the solution opened in cell 2"),
    (["Text", "```{solution-end}\n```"], "cell 1: a solution-end without a solution-start"),
    (["The answer.\n```{solution-start} ex-add\n```", "```{solution-end}\n```"], "cell 0: text before"),
    (["```{solution-start} ex-add\n```", "```{solution-end}\n```\nThe next exercise."], "cell 1: text after"),
])
def test_without_solutions_refuses_what_it_cannot_remove_whole(sources, error):
    with pytest.raises(ValueError, match=re.escape(f"chapter.ipynb, {error}")):
        without_solutions(notebook(*sources), "chapter.ipynb")


PAGE = """# Appendix

```{exercise} Add
:label: ex-add
What is 1 + 1?
```

```{solution-start} ex-add
:class: dropdown
```
The cell below prints it.

```{code-cell} python
print(1 + 1)
```

```{solution-end}
```

Text after.

:::{solution-start} ex-two
:::
Gone.
:::{solution-end}
:::
The end.
"""


def test_page_without_solutions_drops_each_gated_solution_from_its_start_line_to_its_closing_fence():
    stripped = page_without_solutions(PAGE)
    assert stripped == PAGE.split("```{solution-start}")[0] + "\nText after.\n\nThe end.\n"
    assert page_without_solutions("No solutions here.\n") == "No solutions here.\n"


@pytest.mark.parametrize("text, error", [
    ("A\n```{solution-start} ex\n```\nB\n", "line 2: a solution-start without its solution-end"),
    ("A\n```{solution-end}\n```\n", "line 2: a solution-end without a solution-start"),
    ("```{solution-start} a\n```\n```{solution-start} b\n```\n```{solution-end}\n```\n",
     "line 3: a solution-start before the solution-end of the solution opened on line 1"),
    ("```{solution-start} a\n```\nB\n```{solution-end}", "line 4: a solution-end directive without its closing"),
])
def test_page_without_solutions_refuses_what_it_cannot_remove_whole(text, error):
    with pytest.raises(ValueError, match=re.escape(f"appendix.md, {error}")):
        page_without_solutions(text, "appendix.md")


@pytest.fixture(scope="module")
def build_log() -> str:
    if not (FULL / "index.html").is_file():
        pytest.skip(f"no full edition at {FULL}: run `make book` first")
    done = subprocess.run([sys.executable, str(SCRIPT), "--book", str(BOOK)], capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_student_edition_reuses_the_executed_notebooks(build_log):
    assert "reusing the outputs of" in build_log
    assert "building the full edition first" not in build_log, "the full edition was stale or missing"
    assert "Executing" not in build_log and "execution_mode='off'" in build_log


@pytest.mark.slow
def test_student_edition_has_the_exercises_but_not_the_solutions(build_log):
    # the table of contents' pages: a page removed from the book may linger in _build
    pages = [Path(f"{doc}.html") for doc in toc_pages(BOOK / "_toc.yml")]
    exercises_seen = solutions_seen = code_seen = 0
    for relative in pages:
        full_exercises, full_solutions, full_code = exercises_and_solutions(FULL / relative)
        if not full_exercises:
            continue
        assert (STUDENT / relative).is_file(), f"the student edition lacks {relative}"
        student_exercises, student_solutions, _ = exercises_and_solutions(STUDENT / relative)
        assert student_exercises == full_exercises, f"{relative}: the student edition changed the exercises"
        assert not student_solutions, f"{relative}: the student edition shows solutions"
        student_text = words(BeautifulSoup((STUDENT / relative).read_text(), "html.parser").get_text())
        for solution in full_solutions:
            assert solution[:80] not in student_text, f"{relative}: solution text leaked: {solution[:80]!r}"
        for code in full_code:  # a gated solution's code cells, which hide_solutions alone would leave
            assert code not in student_text, f"{relative}: a solution's code leaked: {code[:80]!r}"
        exercises_seen += len(full_exercises)
        solutions_seen += len(full_solutions)
        code_seen += len(full_code)
    assert exercises_seen > 0 and solutions_seen > 0, "the full edition has no exercises with solutions to compare"
    assert code_seen > 0, "the full edition has no gated solution with code cells to compare"
    # the page sources (which hold the solutions) are not published with the student edition
    assert not (STUDENT / "_sources").exists()
