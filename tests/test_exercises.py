"""The exercises: every answer check says right to its solution and wrong to a slip; every notebook
with exercises has at least three, each with a solution cell that runs in CI and is hidden from the
reader; takeaways stay short and set-up cells small."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from dpo_utils import exercises
from dpo_utils.exercises import EXERCISES, check

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
# The notebooks whose exercises are graded and solved in code cells (07, 09, 11 and 12 follow with their re-run).
WITH_EXERCISES = [path for path in ALL if path.name[:2] in {"01", "02", "03", "04", "05", "06", "08", "10"}]


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell):
    return "".join(cell["source"])


def solution_cells(path):
    return [c for c in cells(path) if c["cell_type"] == "code" and "solution" in c["metadata"].get("tags", [])]


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_a_check_refuses_no_answer_and_a_slip(key, capsys):
    item = EXERCISES[key]
    assert not check(key, None)
    assert "no answer yet" in capsys.readouterr().out
    if item.inputs is None:
        slip = np.asarray(exercises.as_array(item.expected())) * 1.1 + 0.1
    else:

        def slip(*args):
            return exercises.as_array(item.expected(*args)) * 1.1 + 0.1

    assert not check(key, slip)
    assert "Hint:" in capsys.readouterr().out


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_a_check_accepts_the_expected_answer(key, capsys):
    item = EXERCISES[key]
    assert check(key, item.expected if item.inputs is not None else item.expected())
    assert capsys.readouterr().out.strip() == f"Exercise {key}: right."


def test_an_answer_that_raises_is_wrong_with_its_error_named(capsys):
    key = next(k for k, item in EXERCISES.items() if item.inputs is not None)
    assert not check(key, lambda *args: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out
    with pytest.raises(KeyError, match="no exercise"):
        check("99.9", 1.0)


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.name[:2])
def test_three_graded_exercises_each_with_a_hidden_solution_that_checks_itself(path):
    markdown = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "markdown")
    for grade in ("warm-up", "core", "stretch"):
        assert re.search(rf"\*\*\d+ \({grade}\)\.\*\*", markdown), f"{path.name}: no ({grade}) exercise"
    solutions = solution_cells(path)
    assert len(solutions) >= 3, f"{path.name}: {len(solutions)} solution cells"
    for cell in solutions:
        text = source(cell)
        assert text.startswith("# @title Solution"), "Colab shows the title and hides the code"
        assert cell["metadata"].get("cellView") == "form" and cell["metadata"]["jupyter"]["source_hidden"]
        assert cell["outputs"], "a solution's stored output comes from the full-size run"
    for cell in cells(path):
        if cell["cell_type"] == "markdown" and source(cell).startswith("**Solution"):
            hidden = cell["metadata"].get("jupyter", {}).get("source_hidden")
            assert "solution" in cell["metadata"].get("tags", []) and hidden, "an explanation is hidden too"
    keys = {k for k in EXERCISES if k.startswith(path.name[:2] + ".")}
    checked = set(re.findall(r'check\("(\d\d\.\d+)"', "".join(source(c) for c in solutions)))
    assert keys <= checked, f"{path.name}: no solution checks {sorted(keys - checked)}"


def test_every_registered_exercise_belongs_to_a_notebook_with_exercises():
    prefixes = {path.name[:2] for path in WITH_EXERCISES}
    assert {key[:2] for key in EXERCISES} <= prefixes


def takeaway_words(path):
    found = [c for c in cells(path) if c["cell_type"] == "markdown" and source(c).lstrip().startswith("## Takeaway")]
    return [len(re.sub(r"\$[^$]*\$", "x", source(c)).split()) for c in found]


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.name[:2])
def test_the_takeaway_is_at_most_300_words(path):
    words = takeaway_words(path)
    assert words and max(words) <= 300, f"{path.name}: takeaway of {words} words"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name[:2])
def test_the_set_up_cell_is_at_most_12_lines(path):
    setup = next(c for c in cells(path) if c["cell_type"] == "code" and "REPO_URL = " in source(c))
    lines = [line for line in source(setup).splitlines() if line.strip()]
    assert len(lines) <= 12, f"{path.name}: set-up cell of {len(lines)} lines"
