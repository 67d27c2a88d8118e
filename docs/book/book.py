"""The handout's two steps around Sphinx (run by docs/book/build.sh, with .venv-docs' Python).

    python docs/book/book.py prepare build/book/src
    python docs/book/book.py pdf build/book/singlehtml/index.html build/book/dpo-tutorial.pdf

``prepare`` copies the notebooks (copies, not links: Sphinx must see plain files) and the index
page into the source folder, with the Colab badge pointing at a local image and links to the
repository's other files (``../dpo_utils/losses.py``) pointing at the repository on GitHub.
``pdf`` prints the single-page book to an A4 PDF in headless Chromium, once MathJax has rendered
every formula, after scaling down anything wider than the page.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHROMIUM = "/usr/bin/chromium"
# Chromium as the browser test launches it: no sandbox (root in containers), nothing fetched
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
BADGE = re.compile(r"\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)")
SECTION_LINK = re.compile(r"(\]\(\d\d_\w+\.ipynb)#([^)\s]+)")  # a link to a section of another notebook
CHAPTER_LINK = re.compile(r"\]\((\d\d_\w+\.ipynb)")  # a link to another chapter, relative to notebooks/
REPO_LINK = re.compile(r"(\]\(|href=\")\.\./([^)\"\s#]+)")


def repo_url() -> str:
    sys.path.insert(0, str(REPO))
    from dpo_utils.tools.colab import REPO_URL

    return REPO_URL


def book_markdown(source: str, url: str) -> str:
    """A markdown cell as the book shows it: local badge image, repository files linked on GitHub,
    section links with the book's anchors."""
    source = BADGE.sub("(colab-badge.svg)", source)
    source = SECTION_LINK.sub(lambda m: f"{m.group(1)}#{book_anchor(m.group(2))}", source)
    return REPO_LINK.sub(lambda m: f"{m.group(1)}{url}/blob/main/{m.group(2)}", source)


def book_anchor(jupyter_anchor: str) -> str:
    """The book's (MyST's, GitHub-style) anchor of a heading, from JupyterLab's: JupyterLab keeps the
    heading's case and punctuation and joins words with '-'; the book lowercases and drops punctuation."""
    return re.sub(r"[^\w\- ]", "", unquote(jupyter_anchor).strip().lower()).replace(" ", "-")


def prepare(src: Path) -> None:
    """Fill ``src`` with index.md and copies of the notebooks, ready for sphinx-build."""
    url = repo_url()
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    (src / "index.md").write_text(
        (HERE / "index.md").read_text(encoding="utf-8").replace("{REPO_URL}", url), encoding="utf-8"
    )
    shutil.copy(HERE / "_static" / "colab-badge.svg", src / "notebooks" / "colab-badge.svg")
    solutions = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for cell in notebook["cells"]:
            if cell["cell_type"] == "markdown":
                cell["source"] = book_markdown("".join(cell["source"]), url)
        solutions += appendix_cells(path, notebook)
        # in the chapter a solution's code is folded (the reader opens it after trying) and its
        # explanation is left to the appendix
        notebook["cells"] = [c for c in notebook["cells"] if c["cell_type"] == "code" or not is_solution(c)]
        for cell in notebook["cells"]:
            if is_solution(cell):
                cell["metadata"] = {**cell["metadata"], "tags": [*cell["metadata"]["tags"], "hide-input"]}
        text = json.dumps(notebook, indent=1, ensure_ascii=False)
        (src / "notebooks" / path.name).write_text(text, encoding="utf-8")
    write_appendix(src / "appendix" / "solutions.ipynb", solutions, notebook["metadata"])


def is_solution(cell: dict) -> bool:
    """A solution's code, or its explanation (a markdown cell), both tagged ``solution``."""
    return "solution" in cell["metadata"].get("tags", [])


def appendix_cells(path: Path, notebook: dict) -> list[dict]:
    """A notebook's solution cells, explanations and code, shown unfolded under a heading that links back."""
    found = [json.loads(json.dumps(cell)) for cell in notebook["cells"] if is_solution(cell)]
    if not found:
        return []
    for cell in found:  # links to other chapters, from the appendix's folder
        if cell["cell_type"] == "markdown":
            cell["source"] = CHAPTER_LINK.sub(r"](../notebooks/\1", "".join(cell["source"]))
    title = "".join(notebook["cells"][0]["source"]).splitlines()[0].lstrip("# ")
    heading = {"cell_type": "markdown", "metadata": {}, "source": f"## [{title}](../notebooks/{path.name})"}
    return [heading | {"id": f"solutions-{path.stem[:2]}"}, *found]


def write_appendix(path: Path, cells: list[dict], metadata: dict) -> None:
    """The appendix of solutions: every notebook's solution cells with their stored outputs (the PDF
    prints the folded ones closed, so they are read here)."""
    intro = "# Appendix: solutions to the exercises\n\nEach notebook's solutions, as its full-size run executed them."
    notebook = {"cells": [{"cell_type": "markdown", "id": "solutions", "metadata": {}, "source": intro}, *cells]}
    notebook |= {"metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False), encoding="utf-8")


# Before printing: each chapter on a new page, and anything wider than the page (a long formula,
# a wide table) scaled down to fit instead of clipped. Returns what is still too wide.
FIT_TO_PAGE = """() => {
  for (const start of document.querySelectorAll('span[id^="document-notebooks/"]')) {
    start.nextElementSibling?.classList.add('book-page-break');
  }
  const wide = el => el.scrollWidth > el.clientWidth + 1;
  const boxes = ['div.math', 'mjx-container[display="true"]', 'div.highlight pre', '.cell_output pre', 'table',
                 '.cell_output img'].join(', ');
  let scaled = 0;
  for (const el of document.querySelectorAll(boxes)) {
    if (wide(el)) { el.style.zoom = (el.clientWidth / el.scrollWidth).toFixed(3); scaled += 1; }
  }
  const still = [...document.querySelectorAll(boxes)].filter(wide).map(el => el.outerHTML.slice(0, 120));
  return {scaled, still};
}"""


def wait_for_mathjax(page, timeout_ms: int = 120_000) -> None:
    """Return once MathJax has loaded and typeset the page (its startup promise has resolved).

    Sphinx loads MathJax only on pages with maths; on the others this returns at once."""
    if not page.evaluate("!!document.querySelector('script[src*=\"mathjax/\"]')"):
        return
    page.wait_for_function("window.MathJax?.startup?.promise !== undefined", polling=100, timeout=timeout_ms)
    page.evaluate("MathJax.startup.promise.then(() => true)")


SINGLE_PAGE_SECTION = re.compile(r'href="#document-[^"#]+#([^"]+)"')


def single_page_links(html: Path) -> None:
    """On the single page every chapter is a part of one document, so a link to a section of another
    chapter (Sphinx writes ``#document-notebooks/05_x#section``) becomes the section's own anchor."""
    text = html.read_text(encoding="utf-8")
    html.write_text(SINGLE_PAGE_SECTION.sub(r'href="#\1"', text), encoding="utf-8")


def print_pdf(html: Path, pdf: Path) -> None:
    """Print ``html`` (the single-page build) to an A4 ``pdf`` once MathJax has finished."""
    from playwright.sync_api import sync_playwright

    single_page_links(html)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(html.resolve().as_uri(), wait_until="load")
        wait_for_mathjax(page)
        page.emulate_media(media="print")
        page.set_viewport_size({"width": 703, "height": 1000})  # A4 less the margins, at 96 dpi
        fit = page.evaluate(FIT_TO_PAGE)
        if fit["still"]:
            sys.exit(f"{html}: still wider than the page after scaling: {fit['still']}")
        page.pdf(
            path=str(pdf),
            format="A4",
            print_background=True,
            outline=True,
            tagged=True,
            margin={"top": "15mm", "bottom": "15mm", "left": "12mm", "right": "12mm"},
            display_header_footer=True,
            header_template="<span></span>",
            footer_template='<div style="font-size:8px;width:100%;text-align:center">'
            '<span class="pageNumber"></span> / <span class="totalPages"></span></div>',
        )
        browser.close()
    print(f"{pdf}: {pdf.stat().st_size / 1e6:.1f} MB ({fit['scaled']} wide blocks scaled to the page)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("prepare").add_argument("src", type=Path)
    pdf = steps.add_parser("pdf")
    pdf.add_argument("html", type=Path)
    pdf.add_argument("pdf", type=Path)
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.src)
    else:
        print_pdf(args.html, args.pdf)


if __name__ == "__main__":
    main()
