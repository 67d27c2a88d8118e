"""The repository URL lives in dpo_utils.tools.colab.REPO_URL; every notebook must agree with it."""

import json
import shutil

import pytest

from dpo_utils.tools.colab import NOTEBOOKS_DIR, REPO_URL, github_slug, notebook_urls, set_repo_url


@pytest.mark.parametrize("path", sorted(NOTEBOOKS_DIR.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_notebook_names_the_one_repository_url(path):
    urls = notebook_urls(path)
    assert urls["setup"] == {github_slug(REPO_URL)}, "set-up cell: REPO_URL differs from tools.colab.REPO_URL"
    assert urls["badge"] == {github_slug(REPO_URL)}, "Open-in-Colab badge differs from dpo_utils.tools.colab.REPO_URL"


def test_set_repo_url_rewrites_badges_and_setup_cells(tmp_path):
    for path in sorted(NOTEBOOKS_DIR.glob("*.ipynb"))[:2]:
        shutil.copy(path, tmp_path / path.name)
    changed = set_repo_url("https://github.com/someone/my-fork.git", tmp_path)
    assert len(changed) == 2
    for path in changed:
        assert notebook_urls(path) == {"setup": {"someone/my-fork"}, "badge": {"someone/my-fork"}}
        json.loads(path.read_text())  # still a valid notebook
    assert set_repo_url("https://github.com/someone/my-fork", tmp_path) == []  # idempotent


def test_a_non_github_url_is_refused_with_the_expected_form():
    with pytest.raises(ValueError, match="https://github.com/owner/name"):
        github_slug("git@github.com:someone/fork")
