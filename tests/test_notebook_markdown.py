"""Markdown that renders the same everywhere: no "|" inside maths in a table row.

A "|" splits a markdown table cell before the maths is parsed, in every renderer but Jupyter's
own: `$\\log\\pi(y|x)$` in a table row cuts the row at `$\\log\\pi(y`. Write `\\mid` (or `\\lvert`,
`\\rvert`, `\\Vert`) instead.
"""

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MATH = re.compile(r"\$[^$]+\$")


def bars_in_table_maths(source: str) -> list[str]:
    """The inline maths spans of table rows in ``source`` that contain "|"."""
    rows = [line for line in source.splitlines() if line.lstrip().startswith("|")]
    return [span for row in rows for span in MATH.findall(row) if "|" in span]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name[:2])
def test_no_table_row_has_a_bar_inside_its_maths(path):
    cells = nbformat.read(path, as_version=4).cells
    found = [
        (cell.id, span) for cell in cells if cell.cell_type == "markdown" for span in bars_in_table_maths(cell.source)
    ]
    assert found == [], f"{path.name}: write \\mid instead of | inside maths in a table: {found}"


def test_the_check_finds_a_bar_in_table_maths_and_nothing_elsewhere():
    source = "| a | $\\log\\pi(y|x)$ |\n|---|---|\n| b | $\\log\\pi(y\\mid x)$ |\n\nProse $p(y|x)$ is fine."
    assert bars_in_table_maths(source) == ["$\\log\\pi(y|x)$"]
