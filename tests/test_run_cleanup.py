"""Notebook runs made by the test suite or by a reduced dpo-run-notebook leave nothing behind."""

import os
import subprocess
import sys

import nbformat

from dpo_utils.runtime.config import REPO_ROOT, RUNS_VARIABLE
from dpo_utils.tools import notebooks

WRITE_A_RUN = """
from dpo_utils.runtime.config import RUNS_DIR
(RUNS_DIR / "07" / "reduced").mkdir(parents=True)
(RUNS_DIR / "07" / "reduced" / "state.pt").write_bytes(bytes(1000))
open({record!r}, "w").write(str(RUNS_DIR))
"""


def notebook_writing_a_run(folder):
    """A notebook that saves a file under RUNS_DIR and records where RUNS_DIR was."""
    record = folder / "runs_dir.txt"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(WRITE_A_RUN.format(record=str(record)))])
    notebook.metadata["kernelspec"] = notebooks.KERNELSPEC
    nbformat.write(notebook, folder / "07_x.ipynb")
    return folder / "07_x.ipynb", record


def check_the_run_was_elsewhere_and_is_gone(record):
    runs_dir = record.read_text()
    assert not runs_dir.startswith(str(REPO_ROOT)), runs_dir
    assert runs_dir.endswith("runs") and not os.path.exists(runs_dir), runs_dir


def test_the_suite_gives_each_notebook_a_temporary_runs_folder(tmp_path):
    notebook, record = notebook_writing_a_run(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop(RUNS_VARIABLE, None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "conftest",
            "--nbval-lax",
            "--nbval-current-env",
            "-p",
            "no:cacheprovider",
            "-q",
            str(notebook),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    check_the_run_was_elsewhere_and_is_gone(record)


def test_a_reduced_dpo_run_notebook_keeps_the_notebook_only(tmp_path, monkeypatch):
    notebook, record = notebook_writing_a_run(tmp_path)
    monkeypatch.delenv(RUNS_VARIABLE, raising=False)
    notebooks.main([str(notebook), "--size", "reduced", "--output-dir", str(tmp_path / "out")])
    assert (tmp_path / "out" / notebook.name).exists()
    check_the_run_was_elsewhere_and_is_gone(record)
    assert RUNS_VARIABLE not in os.environ
