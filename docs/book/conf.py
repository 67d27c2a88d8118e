"""Sphinx configuration of the handout: the notebooks with their stored outputs, as a book.

Built by docs/book/build.sh, which copies the notebooks into build/book/src (book.py prepare)
and puts a local copy of MathJax 3 into build/book-deps/static/mathjax/. Nothing is executed and
nothing is loaded from the network.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

project = "DPO from first principles"
author = "the dpo-tutorial authors"
copyright = "the dpo-tutorial authors, MIT licence"
extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# the stored outputs of the full-size runs, never re-executed
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # [text](04_....ipynb#a-heading) links, as on GitHub

# MathJax 3 from the local copy (Sphinx's default is a CDN). Without "noundefined", an unknown
# macro is a MathJax error (which the browser test finds) instead of quietly red text.
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {"tex": {"packages": {"[-]": ["noundefined"]}}}

html_theme = "sphinx_book_theme"
html_title = "DPO from first principles"
html_static_path = ["_static", str(REPO / "build" / "book-deps" / "static")]
html_css_files = ["book.css"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
}
html_context = {"default_mode": "light"}  # a fixed mode: no theme switch to guess in a fresh browser
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None


def no_search_on_the_single_page(app, exception):
    """The theme loads searchindex.js on every page, but the single-page build (the PDF's source)
    writes none: an empty one keeps the page free of failed requests."""
    if exception is None and app.builder.name == "singlehtml":
        (Path(app.outdir) / "searchindex.js").write_text("/* the single-page book has no search */\n")


def setup(app):
    app.connect("build-finished", no_search_on_the_single_page)
