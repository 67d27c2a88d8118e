"""The built handout, opened in a real browser (Debian's chromium driven by Playwright), offline.

Run after docs/book/build.sh, with the docs venv (.ci/run does both):

    .venv-docs/bin/python -m pytest -o addopts="-p no:cacheprovider" tests/book

Every page of the HTML book, and the single page the PDF is printed from, must show: every
formula rendered by MathJax without error, no raw ``$...$``, ``\\begin`` or TeX macro left in the
prose, every image loaded, every relative link pointing at an existing page and anchor, no
request leaving the book's files, and at least as many plots as its notebook stores.
"""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

pytest.importorskip("playwright", reason="the book test runs in .venv-docs (requirements-docs.txt)")
from playwright.sync_api import sync_playwright  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "build" / "book"
HTML = BOOK / "html"
SINGLE = BOOK / "singlehtml" / "index.html"
NOTEBOOKS = ROOT / "notebooks"
if not (HTML / "index.html").exists():
    pytest.skip("the book is not built: run docs/book/build.sh", allow_module_level=True)
sys.path.insert(0, str(ROOT / "docs" / "book"))
from book import CHROMIUM, CHROMIUM_ARGS, wait_for_mathjax  # noqa: E402

SOLUTIONS = HTML / "appendix" / "solutions.html"
PAGES = [HTML / "index.html"] + sorted((HTML / "notebooks").glob("*.html")) + [SOLUTIONS]
RAW_TEX = [
    (re.compile(r"\$[^$\n]*\$"), "raw $...$"),
    (re.compile(r"\\begin\{"), "raw \\begin"),
    (re.compile(r"\\[a-zA-Z]{2,}"), "raw TeX macro"),
]

# Runs in the page once MathJax is done: what a reader would see that is broken.
INSPECT = """async () => {
  await Promise.all([...document.images].map(img => {  // lazy images load now, or fail
    img.loading = 'eager';
    return img.complete ? null : new Promise(done => { img.onload = img.onerror = done; });
  }));
  const article = document.querySelector('article') || document.body;
  const prose = [];
  for (const el of article.querySelectorAll('p, li, td, th, h1, h2, h3, h4, h5, h6, dt, dd, figcaption')) {
    const copy = el.cloneNode(true);
    copy.querySelectorAll('pre, code, .math, mjx-container, .cell_output, p, li, td, th').forEach(n => n.remove());
    prose.push(copy.textContent);
  }
  return {
    unrendered: [...document.querySelectorAll('.math')].filter(m => !m.querySelector('mjx-container'))
                  .map(m => m.textContent.slice(0, 80)),
    math_errors: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')]
                  .map(e => e.getAttribute('data-mjx-error') || e.textContent.slice(0, 80)),
    broken_images: [...document.images].filter(img => !img.naturalWidth).map(img => img.getAttribute('src')),
    plots: document.querySelectorAll('.cell_output img').length,
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    prose,
  };
}"""


@cache
def ids_in(path: Path) -> frozenset[str]:
    """The element ids of a built HTML file, as written by Sphinx (anchors a link may point at)."""
    return frozenset(re.findall(r'\bid="([^"]+)"', path.read_text(encoding="utf-8")))


def stored_plots(notebook: Path) -> int:
    """Image outputs stored in a notebook: the plots its page must show."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return sum(
        any(kind.startswith("image/") for kind in output.get("data", {}))
        for cell in cells
        for output in cell.get("outputs", [])
    )


def link_problems(page: Path, links: list[str], page_ids: set[str]) -> list[str]:
    problems = []
    for link in links:
        url, fragment = urldefrag(link)
        if urlparse(url).scheme != "file":
            continue  # a link to the web is the reader's choice to follow, not a request
        target = Path(unquote(urlparse(url).path))
        if target == page:
            known = page_ids
        elif target.is_file():
            known = ids_in(target)
        else:
            problems.append(f"link to a missing page: {link}")
            continue
        if fragment and unquote(fragment) not in known:
            problems.append(f"link to a missing anchor: {link}")
    return problems


def page_problems(browser, page_path: Path, expected_plots: int) -> list[str]:
    """Everything a reader of ``page_path`` would find broken, as readable lines."""
    problems = []
    context = browser.new_context()

    def only_local(route):
        url = route.request.url
        local = url.startswith("file://") and Path(unquote(urlparse(url).path)).is_relative_to(BOOK)
        if local or url.startswith("data:"):
            return route.continue_()
        problems.append(f"request leaving the book's files: {url}")
        return route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: message.type == "error" and problems.append(f"console error: {message.text}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url} ({request.failure})"))
    page.goto(page_path.as_uri(), wait_until="load")
    wait_for_mathjax(page)
    seen = page.evaluate(INSPECT)
    context.close()
    problems += [f"maths not rendered: {text!r}" for text in seen["unrendered"]]
    problems += [f"MathJax error: {text!r}" for text in seen["math_errors"]]
    problems += [f"image did not load: {src}" for src in seen["broken_images"]]
    for text in seen["prose"]:
        problems += [f"{what} in prose: {text.strip()[:100]!r}" for pattern, what in RAW_TEX if pattern.search(text)]
    problems += link_problems(page_path, seen["links"], set(seen["ids"]))
    if seen["plots"] < expected_plots:
        problems.append(f"{seen['plots']} plots shown, the notebook stores {expected_plots}")
    return problems


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def expected_plots(page: Path) -> int:
    notebook = NOTEBOOKS / f"{page.stem}.ipynb"
    return stored_plots(notebook) if notebook.exists() else 0


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.stem)
def test_book_page_shows_everything(browser, page):
    assert page_problems(browser, page, expected_plots(page)) == []


def test_every_notebook_is_a_page_of_the_book():
    pages = sorted(page.stem for page in (HTML / "notebooks").glob("*.html"))
    assert pages == sorted(notebook.stem for notebook in NOTEBOOKS.glob("*.ipynb"))


def test_the_single_page_the_pdf_is_printed_from(browser):
    total = sum(stored_plots(notebook) for notebook in NOTEBOOKS.glob("*.ipynb"))
    assert page_problems(browser, SINGLE, total) == []
    pdf = BOOK / "dpo-tutorial.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_mtime >= SINGLE.stat().st_mtime


BROKEN = """
<p>Broken maths: <span class="math notranslate nohighlight">\\(\\frac{1}{\\notamacro}\\)</span>,
unrendered: <span class="math notranslate nohighlight">\\(x</span>.</p>
<p>Raw maths left in prose: $x^2$ and \\begin{align} a = b, never ended.</p>
<p><img src="missing.png" alt="a missing plot"> <img src="http://127.0.0.1:9/plot.png" alt="a remote image"></p>
<p><a href="nowhere.html">a missing page</a>,
<a href="04_rlhf_objective_to_dpo_loss.html#no-such-section">a missing anchor</a></p>
"""


def test_a_page_with_broken_maths_images_and_links_fails(browser):
    """The checks can fail: a copy of a real page with each kind of fault added."""
    source = HTML / "notebooks" / "04_rlhf_objective_to_dpo_loss.html"
    broken = source.with_name("zz_broken_page_check.html")
    html = source.read_text(encoding="utf-8")
    try:
        broken.write_text(
            html.replace('<article class="bd-article">', '<article class="bd-article">' + BROKEN, 1), encoding="utf-8"
        )
        problems = "\n".join(page_problems(browser, broken, expected_plots=99))
    finally:
        broken.unlink(missing_ok=True)
    for expected in (
        "MathJax error: 'Undefined control sequence \\\\notamacro'",
        "maths not rendered: '\\\\(x'",
        "raw $...$ in prose",
        "raw \\begin in prose",
        "image did not load: missing.png",
        "request leaving the book's files: http://127.0.0.1:9/plot.png",
        "link to a missing page",
        "link to a missing anchor",
        "plots shown, the notebook stores 99",
    ):
        assert expected in problems, problems


def with_solutions() -> list[Path]:
    def has_solution(notebook: Path) -> bool:
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        return any("solution" in cell["metadata"].get("tags", []) for cell in cells)

    return [notebook for notebook in sorted(NOTEBOOKS.glob("*.ipynb")) if has_solution(notebook)]


FOLDED = """() => [...document.querySelectorAll('details')]
  .filter(d => d.textContent.includes('Solution to exercise'))
  .map(d => ({open: d.open, code_shown: [...d.querySelectorAll('pre')].some(pre => pre.checkVisibility())}))"""


def test_solutions_are_folded_in_their_chapter_and_shown_in_the_appendix(browser):
    notebooks = with_solutions()
    assert notebooks, "no notebook has a solution cell"
    page = browser.new_page()
    for notebook in notebooks:
        page.goto((HTML / "notebooks" / f"{notebook.stem}.html").as_uri())
        folded = page.evaluate(FOLDED)
        assert len(folded) >= 3 and not any(f["open"] or f["code_shown"] for f in folded), notebook.name
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
    assert all(f["code_shown"] for f in page.evaluate(FOLDED)), "an opened solution shows its code"
    page.goto(SOLUTIONS.as_uri())
    shown = page.locator("pre", has_text="Solution to exercise")
    assert shown.count() >= 3 * len(notebooks) and shown.first.is_visible()
    page.close()


def test_a_mechanism_figure_renders(browser):
    page = browser.new_page()
    page.goto((HTML / "notebooks" / "00_start_here.html").as_uri())
    widths = page.evaluate("() => [...document.querySelectorAll('.cell_output img')].map(img => img.naturalWidth)")
    assert widths and min(widths) > 300, "00 draws the ladder"
    page.close()
