#!/usr/bin/env bash
# Builds the workshop handout from the notebooks' stored outputs; no notebook is executed.
#   build/book/html/index.html    the book: table of contents, maths, plots, cross-links
#   build/book/dpo-tutorial.pdf   the whole book on A4, for printing
# Needs python3, npm and Debian's chromium (apt-get install chromium). The first run installs
# requirements-docs.txt into .venv-docs and MathJax 3 into build/book-deps; later runs are offline.
set -euo pipefail
cd "$(dirname "$0")/../.."

BOOK=build/book
DEPS=build/book-deps
MATHJAX=mathjax@3.2.2

if ! cmp -s requirements-docs.txt .venv-docs/installed-requirements.txt; then
    python3 -m venv .venv-docs
    .venv-docs/bin/pip install -q -r requirements-docs.txt
    cp requirements-docs.txt .venv-docs/installed-requirements.txt
fi
if [ ! -f "$DEPS/static/mathjax/tex-chtml.js" ]; then
    npm install --prefix "$DEPS" --no-save --no-audit --no-fund --loglevel=error "$MATHJAX"
    mkdir -p "$DEPS/static"
    rm -rf "$DEPS/static/mathjax"
    cp -r "$DEPS/node_modules/mathjax/es5" "$DEPS/static/mathjax"
fi

.venv-docs/bin/python docs/book/book.py prepare "$BOOK/src"
# -W: a broken cross-reference or a notebook the reader cannot render stops the build
for builder in html singlehtml; do
    .venv-docs/bin/sphinx-build -q -W --keep-going -b "$builder" -c docs/book -d "$BOOK/doctrees" "$BOOK/src" "$BOOK/$builder"
done
if [ ! -x /usr/bin/chromium ]; then
    echo "The HTML book is in $BOOK/html; the PDF needs Chromium: apt-get install chromium" >&2
    exit 1
fi
.venv-docs/bin/python docs/book/book.py pdf "$BOOK/singlehtml/index.html" "$BOOK/dpo-tutorial.pdf"
echo "book: $BOOK/html/index.html"
