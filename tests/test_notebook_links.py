"""Links between notebooks are real links, and every one of them lands.

Every mention of another notebook in markdown ("notebook 04") is a link to its file. A link
with a fragment names a section by its heading's anchor, written the way JupyterLab, the classic
notebook and nbconvert make one: the heading's text with each space replaced by "-"
(:func:`heading_anchor`). A book built with MyST resolves the same anchors when it uses this
function as ``myst_heading_slug_func``. Only plain ASCII headings may be targets (no maths, no
markup, no characters such as "·"): JupyterLab compares a link's fragment percent-encoded, and
MyST drops maths from a heading's text, so anything else would break in one of them.
"""

import re
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")
MENTION = re.compile(r"\b[Nn]otebooks? \d\d\b")
PLAIN_HEADING = re.compile(r"[A-Za-z0-9 .,:;'()+=?!-]+")


def heading_anchor(text: str) -> str:
    """The anchor of a heading with plain text ``text``: spaces become "-", nothing else changes."""
    return text.strip().replace(" ", "-")


def markdown_lines(path: Path):
    """``(cell_id, line)`` of every markdown line outside fenced code blocks."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "markdown":
            continue
        fenced = False
        for line in cell.source.splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif not fenced:
                yield cell.id, line


def headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip() for _, line in markdown_lines(path) if re.match(r"#{1,6} ", line)]


def links(path: Path):
    """``(cell_id, text, target)`` of every local link (web and mail links excluded)."""
    for cell_id, line in markdown_lines(path):
        for text, target in LINK.findall(line):
            if not re.match(r"[a-z]+:", target):
                yield cell_id, text, target


def link_problems(path: Path) -> list[str]:
    problems = []
    for cell_id, text, target in links(path):
        where = f"{path.name}, cell {cell_id}, link [{text}]({target})"
        file_part, _, fragment = target.partition("#")
        target_path = NOTEBOOKS / file_part if file_part else path
        if not target_path.is_file():
            problems.append(f"{where}: no file {target_path.name}")
            continue
        number = re.search(r"\b(\d\d)\b", text)
        if file_part and number and not target_path.name.startswith(number.group(1)):
            problems.append(f"{where}: the text names notebook {number.group(1)}, the link goes to {target_path.name}")
        if fragment:
            problems += [f"{where}: {problem}" for problem in fragment_problems(target_path, fragment)]
    return problems


def fragment_problems(target_path: Path, fragment: str) -> list[str]:
    if target_path.suffix != ".ipynb":
        return [f"a fragment into {target_path.name}, which is not a notebook"]
    matches = [text for text in headings(target_path) if heading_anchor(text) == fragment]
    if len(matches) != 1:
        return [f"{len(matches)} headings of {target_path.name} have the anchor #{fragment}"]
    if not PLAIN_HEADING.fullmatch(matches[0]):
        return [f"the heading {matches[0]!r} is not plain ASCII text, so its anchor differs between renderers"]
    return []


def plain_mentions(path: Path) -> list[str]:
    return [
        f"{path.name}, cell {cell_id}: {mention!r} is not a link"
        for cell_id, line in markdown_lines(path)
        for mention in MENTION.findall(LINK.sub("", line))
    ]


@pytest.mark.parametrize("path", PATHS, ids=lambda path: path.name[:2])
def test_every_local_link_reaches_an_existing_notebook_and_heading(path):
    assert link_problems(path) == []


@pytest.mark.parametrize("path", PATHS, ids=lambda path: path.name[:2])
def test_every_mention_of_a_notebook_is_a_link(path):
    assert plain_mentions(path) == []


def test_the_notebooks_link_to_each_other_and_to_sections():
    targets = [target for path in PATHS for _, _, target in links(path)]
    notebooks = {target.partition("#")[0] for target in targets if target.partition("#")[0].endswith(".ipynb")}
    assert len(notebooks) == len(PATHS)
    assert sum("#" in target for target in targets) >= 10


def test_the_checks_catch_a_missing_file_a_missing_anchor_a_wrong_number_and_a_plain_mention(tmp_path, monkeypatch):
    page = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(
                "## 1. Plain heading\n\n## 2 · Dotted heading\n\n"
                "[notebook 01](01_x.ipynb) [notebook 02](00_page.ipynb) [notebook 00](00_page.ipynb#No-such-heading) "
                "[notebook 00](00_page.ipynb#2-·-Dotted-heading) [fine](#1.-Plain-heading) "
                "and notebook 03 in passing.\n"
                "```python\n# notebook 04 in code is not prose\n```"
            )
        ]
    )
    nbformat.write(page, tmp_path / "00_page.ipynb")
    monkeypatch.setattr(sys.modules[__name__], "NOTEBOOKS", tmp_path)
    problems = link_problems(tmp_path / "00_page.ipynb")
    assert [problem.split(": ", 1)[1] for problem in problems] == [
        "no file 01_x.ipynb",
        "the text names notebook 02, the link goes to 00_page.ipynb",
        "0 headings of 00_page.ipynb have the anchor #No-such-heading",
        "the heading '2 · Dotted heading' is not plain ASCII text, so its anchor differs between renderers",
    ]
    assert plain_mentions(tmp_path / "00_page.ipynb") == [
        "00_page.ipynb, cell " + page.cells[0].id + ": 'notebook 03' is not a link"
    ]
