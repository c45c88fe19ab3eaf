"""The student edition (`make student`): every exercise of the full edition, none of the solutions,
and no notebook executed a second time.

Needs the full edition (`make book` -> _build/html; `make test` builds it first).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from book_toc import toc_pages
from bs4 import BeautifulSoup

pytestmark = pytest.mark.slow

BOOK = Path(os.environ.get("CURVED_LATENTS_BOOK", Path(__file__).resolve().parent.parent))
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_student_edition.py"
FULL = BOOK / "_build" / "html"
STUDENT = BOOK / "_build" / "student" / "_build" / "html"


def words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def exercises_and_solutions(page: Path) -> tuple[list[str], list[str]]:
    """Exercise titles and solution bodies (text without the "Solution to …" title) of a page."""
    soup = BeautifulSoup(page.read_text(), "html.parser")
    exercises = [words(div.select_one(".admonition-title").get_text()) for div in soup.select("div.exercise")]
    solutions = []
    for div in soup.select("div.solution"):
        title = div.select_one(".admonition-title")
        if title:
            title.extract()
        solutions.append(words(div.get_text()))
    return exercises, solutions


@pytest.fixture(scope="module")
def build_log() -> str:
    if not (FULL / "index.html").is_file():
        pytest.skip(f"no full edition at {FULL}: run `make book` first")
    done = subprocess.run([sys.executable, str(SCRIPT), "--book", str(BOOK)], capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_student_edition_reuses_the_executed_notebooks(build_log):
    assert "reusing the outputs of" in build_log
    assert "building the full edition first" not in build_log, "the full edition was stale or missing"
    assert "Executing" not in build_log and "execution_mode='off'" in build_log


def test_student_edition_has_the_exercises_but_not_the_solutions(build_log):
    # the table of contents' pages: a page removed from the book may linger in _build
    pages = [Path(f"{doc}.html") for doc in toc_pages(BOOK / "_toc.yml")]
    exercises_seen = solutions_seen = 0
    for relative in pages:
        full_exercises, full_solutions = exercises_and_solutions(FULL / relative)
        if not full_exercises:
            continue
        assert (STUDENT / relative).is_file(), f"the student edition lacks {relative}"
        student_exercises, student_solutions = exercises_and_solutions(STUDENT / relative)
        assert student_exercises == full_exercises, f"{relative}: the student edition changed the exercises"
        assert not student_solutions, f"{relative}: the student edition shows solutions"
        student_text = words(BeautifulSoup((STUDENT / relative).read_text(), "html.parser").get_text())
        for solution in full_solutions:
            assert solution[:80] not in student_text, f"{relative}: solution text leaked: {solution[:80]!r}"
        exercises_seen += len(full_exercises)
        solutions_seen += len(full_solutions)
    assert exercises_seen > 0 and solutions_seen > 0, "the full edition has no exercises with solutions to compare"
    # the page sources (which hold the solutions) are not published with the student edition
    assert not (STUDENT / "_sources").exists()
