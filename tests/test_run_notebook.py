"""dpo-run-notebook: full runs store outputs in place; reduced runs never overwrite them."""

import io
import os
from importlib.util import find_spec

import nbformat
import pytest
from tqdm import tqdm

from dpo_utils.tools import notebooks
from dpo_utils.tools.notebooks import CURSOR_UP


def tiny_notebook(path):
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import os\nprint(os.environ['DPO_TUTORIAL_SIZE'], open('data.txt').read())")]
    )
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    (path.parent / "data.txt").write_text("read from the notebook's folder")
    return path


def printed(path):
    return nbformat.read(path, as_version=4).cells[0].outputs[0]["text"]


def test_reduced_run_goes_elsewhere_and_leaves_the_stored_notebook(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    source = tiny_notebook(tmp_path / "notebooks" / "07_x.ipynb")
    before = source.read_text()
    monkeypatch.setattr(notebooks, "REDUCED_DIR", tmp_path / "reduced")
    monkeypatch.setenv("DPO_TUTORIAL_SIZE", "full")
    notebooks.main([str(source), "--size", "reduced"])
    assert source.read_text() == before
    assert printed(tmp_path / "reduced" / "07_x.ipynb") == "reduced read from the notebook's folder\n"


def test_reduced_run_into_the_source_folder_is_refused(tmp_path, monkeypatch):
    source = tiny_notebook(tmp_path / "07_x.ipynb")
    monkeypatch.setenv("DPO_TUTORIAL_SIZE", "full")
    with pytest.raises(SystemExit):
        notebooks.main([str(source), "--size", "reduced", "--output-dir", str(tmp_path)])
    with pytest.raises(ValueError, match="overwrite the stored full-size outputs"):
        notebooks.run_notebook(source, "reduced", output=source)


def test_full_run_stores_outputs_in_place(tmp_path, monkeypatch):
    source = tiny_notebook(tmp_path / "07_x.ipynb")
    monkeypatch.setenv("DPO_TUTORIAL_SIZE", "reduced")
    notebooks.main([str(source)])
    assert printed(source) == "full read from the notebook's folder\n"


def test_stored_progress_bar_is_its_final_state(tmp_path, monkeypatch):
    """A text bar's redraws (separate chunks joined by carriage returns) are stored as one line."""
    source = tmp_path / "bar.ipynb"
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import sys, time\n"
                "print('before', flush=True)\n"
                "for i in range(3):\n"
                "    sys.stderr.write(f'\\rbar {i + 1}/3'); sys.stderr.flush(); time.sleep(0.3)\n"
                "sys.stderr.write('\\n')\n"
                "sys.stderr.write('gone 0/2\\r        \\r'); sys.stderr.flush()\n"
                "print('after')"
            )
        ]
    )
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, source)
    monkeypatch.setenv("DPO_TUTORIAL_SIZE", "full")
    notebooks.main([str(source)])
    outputs = nbformat.read(source, as_version=4).cells[0].outputs
    assert [(o["name"], o["text"]) for o in outputs] == [
        ("stdout", "before\n"),
        ("stderr", "bar 3/3\n"),
        ("stdout", "after\n"),
    ]


def test_terminal_text_keeps_plain_lines_and_drops_blanked_bars():
    assert notebooks.terminal_text("a\n\nb 1/2\rb 2/2\nc 0/1\r      \r\n") == "a\n\nb 2/2\n"
    assert notebooks.terminal_text("long line\rshort\n") == "shortline\n"


def test_terminal_text_keeps_an_outer_bar_redrawn_around_a_closed_nested_bar():
    """tqdm draws a nested bar one line down and returns with cursor-up; closed with leave=False, it is blanked."""
    stream = io.StringIO()
    outer = tqdm(total=3, desc="outer", file=stream, mininterval=0, ascii=True, bar_format="{desc} {n}/{total}")
    for _ in range(3):
        for _ in tqdm(range(2), desc="inner", file=stream, leave=False, mininterval=0, ascii=True):
            pass
        outer.update(1)
    outer.close()
    assert CURSOR_UP in stream.getvalue()  # the nested bar really moved the cursor
    assert notebooks.terminal_text("before\n" + stream.getvalue() + "after\n") == "before\nouter 3/3\nafter\n"


def bar_notebook(path):
    cell = "from dpo_utils.runtime.progress import progress_bar\nfor _ in progress_bar(range(3), desc='steps'): pass"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_a_person_gets_a_widget_bar_and_stored_outputs_a_text_line(tmp_path, monkeypatch):
    """Run interactively (no CI, no dpo-run-notebook) a bar is an ipywidgets widget; stored, one text line."""
    from nbclient import NotebookClient

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("DPO_TUTORIAL_TEXT_BARS", raising=False)
    source = bar_notebook(tmp_path / "bar.ipynb")
    live = nbformat.read(source, as_version=4)
    NotebookClient(live, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in live.cells[0].outputs)
    assert find_spec("jupyterlab_widgets"), "JupyterLab draws the widget with this extension (requirements.txt)"

    monkeypatch.setenv("DPO_TUTORIAL_SIZE", "full")
    notebooks.main([str(source)])
    stored = nbformat.read(source, as_version=4).cells[0].outputs
    assert [o["output_type"] for o in stored] == ["stream"]
    assert stored[0]["text"].startswith("steps: 100%") and stored[0]["text"].count("\n") == 1
    assert "DPO_TUTORIAL_TEXT_BARS" not in os.environ  # restored after the run


def test_a_widget_a_library_draws_is_not_stored(tmp_path, monkeypatch):
    """transformers or TRL may draw their own bars as widgets in a kernel: the stored notebook keeps none."""
    cell = "import ipywidgets\ndisplay(ipywidgets.IntProgress(value=3, max=3))\nprint('done')"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "widget.ipynb"
    nbformat.write(notebook, source)
    monkeypatch.setenv("DPO_TUTORIAL_SIZE", "full")
    notebooks.main([str(source)])
    stored = nbformat.read(source, as_version=4)
    assert [o["output_type"] for o in stored.cells[0].outputs] == ["stream"] and "widgets" not in stored.metadata
