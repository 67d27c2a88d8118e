"""The repository URL, kept in one place, and the Colab set-up cell that uses it.

Every notebook opens with an Open-in-Colab badge and a set-up cell that clones this repository
on Colab. Both need the repository's URL before ``dpo_utils`` can be imported, so the URL is
written into each notebook; :data:`REPO_URL` is the one source of truth, a test checks that
every notebook agrees with it, and a fork changes all of them at once with

    dpo-set-repo-url https://github.com/you/your-fork
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from dpo_utils.runtime.config import REPO_ROOT

REPO_URL = "https://github.com/dpo-tutorial/dpo-tutorial"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
_URL_LINE = re.compile(r'^REPO_URL = "([^"]*)"', re.MULTILINE)
_BADGE = re.compile(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/")


def github_slug(url: str) -> str:
    """``owner/name`` of a GitHub URL such as ``https://github.com/owner/name(.git)``."""
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?/?", url.strip())
    if not match:
        raise ValueError(f"{url!r} is not a GitHub repository URL like https://github.com/owner/name")
    return match.group(1)


def notebook_urls(path: Path) -> dict[str, set[str]]:
    """The repository URLs a notebook names: ``{"setup": {...}, "badge": {...}}`` (as GitHub slugs)."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    text = {
        kind: "".join("".join(c["source"]) for c in cells if c["cell_type"] == kind) for kind in ("code", "markdown")
    }
    return {
        "setup": {github_slug(url) for url in _URL_LINE.findall(text["code"])},
        "badge": set(_BADGE.findall(text["markdown"])),
    }


def set_repo_url(url: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Point every notebook's badge and set-up cell at ``url``; return the notebooks changed."""
    slug = github_slug(url)
    changed = []
    for path in sorted(Path(notebooks_dir).glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for cell in notebook["cells"]:
            source = "".join(cell["source"])
            source = _URL_LINE.sub(f'REPO_URL = "https://github.com/{slug}"', source)
            source = _BADGE.sub(f"colab.research.google.com/github/{slug}/blob/", source)
            cell["source"] = source.splitlines(keepends=True)
        new_text = json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"  # as nbformat writes
        if new_text != path.read_text(encoding="utf-8"):
            path.write_text(new_text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Point every notebook's Colab badge and set-up cell at a repository.")
    parser.add_argument("url", help="e.g. https://github.com/you/dpo-tutorial")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR)
    args = parser.parse_args(argv)
    changed = set_repo_url(args.url, args.notebooks)
    print(f"{len(changed)} notebooks now point at {args.url}; also change REPO_URL in dpo_utils/tools/colab.py")


if __name__ == "__main__":
    main()
