"""Committed notebooks carry the kernel metadata JupyterLab writes, so opening one changes nothing."""

from pathlib import Path

import nbformat
import pytest

from dpo_utils.tools import notebooks

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_has_jupyterlab_kernel_metadata(path):
    metadata = nbformat.read(path, as_version=4).metadata
    assert metadata.get("kernelspec") == notebooks.KERNELSPEC, f"{path}: metadata.kernelspec"
    language = metadata.get("language_info", {})
    language_names = (language.get("name"), language.get("pygments_lexer"))
    assert language_names == ("python", "ipython3"), f"{path}: metadata.language_info"


def test_run_notebook_writes_the_kernel_metadata(tmp_path, monkeypatch):
    source = tmp_path / "bare.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), source)
    monkeypatch.setenv("DPO_TUTORIAL_SIZE", "full")
    notebooks.main([str(source)])
    metadata = nbformat.read(source, as_version=4).metadata
    assert metadata["kernelspec"] == notebooks.KERNELSPEC
    assert metadata["language_info"]["name"] == "python"
