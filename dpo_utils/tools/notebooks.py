"""Re-run notebooks at full size and store their outputs in place.

    dpo-run-notebook notebooks/01_mse_toy_gradient_descent.ipynb
    python -m dpo_utils.tools.notebooks notebooks/*.ipynb --size full
    dpo-run-notebook notebooks/07_dpo_smollm2_cpu.ipynb --size reduced   # -> runs/reduced-notebooks/

Committed notebooks carry the outputs of a full-size run (README's rule); this is the
command that makes them. Each notebook prints ``describe_run()`` near the top, so the stored
outputs say which size and which device produced them. A reduced run never overwrites the
committed notebook: it is written to ``runs/reduced-notebooks/`` unless ``--output-dir`` says
where (a folder that would overwrite the source notebook is refused). Its training runs
(checkpoints, final models) go to a temporary folder that is removed afterwards
(:func:`temporary_runs_dir`); the test suite does the same for every notebook (``conftest.py``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from dpo_utils.runtime.config import RUNS_DIR, RUNS_VARIABLE
from dpo_utils.runtime.progress import TEXT_BARS_VARIABLE

REDUCED_DIR = RUNS_DIR / "reduced-notebooks"
# Per cell. Some full-size training cells run for over an hour on a 2-core CPU (09's eight variants).
CELL_TIMEOUT = 4 * 3600
# What JupyterLab writes into a notebook on its first save: committed notebooks carry it, so
# opening one leaves `git status` clean.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def output_path(path: Path, size: str, output_dir: Path | None = None) -> Path:
    """Where the executed notebook is saved: in place for a full run, ``REDUCED_DIR`` for a reduced one."""
    if output_dir is None:
        return path if size == "full" else REDUCED_DIR / path.name
    out = Path(output_dir) / path.name
    if size != "full" and out.resolve() == path.resolve():
        raise ValueError(
            f"{path}: a reduced run would overwrite the stored full-size outputs; choose another --output-dir"
        )
    return out


@contextmanager
def environment_variable(name: str, value: str):
    """Set ``name`` to ``value`` while the block runs (kernels started in it inherit it), then restore it."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextmanager
def temporary_runs_dir(name: str):
    """Point ``DPO_TUTORIAL_RUNS`` at a fresh folder ``.../<name>/runs`` while the block runs,
    for the kernels started in it; then remove the folder and restore the variable.

    A reduced run's checkpoints and final models (about 1 GB per SmolLM2 run) are not kept.
    """
    parent = Path(tempfile.mkdtemp(prefix=f"dpo-tutorial-{name}-"))
    try:
        with environment_variable(RUNS_VARIABLE, str(parent / "runs")):  # ends in runs/, as printed paths do
            yield parent / "runs"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


CURSOR_UP = "\x1b[A"  # what tqdm writes to return from a nested bar's line to its own


def terminal_text(text: str) -> str:
    """``text`` as a terminal leaves it: a carriage return redraws its line from the start, and the
    cursor-up code of nested bars returns to the line above.

    A line that was redrawn ends in its final state, and is dropped if a redraw blanked it (a closed
    bar with ``leave=False``). Lines never redrawn are kept as they are.
    """
    rows, redrawn, row, column = [""], set(), 0, 0
    for token in re.split(f"(\r|\n|{re.escape(CURSOR_UP)})", text):
        if token == "\n":
            row, column = row + 1, 0
            if row == len(rows):
                rows.append("")
        elif token == "\r":
            column = 0
            redrawn.add(row)
        elif token == CURSOR_UP:
            row = max(0, row - 1)
        elif token:
            line = rows[row].ljust(column)
            rows[row] = line[:column] + token + line[column + len(token) :]
            column += len(token)
    last = len(rows) - 1  # kept even when blank: it holds the preceding newline
    return "\n".join(
        line.rstrip() if index in redrawn else line
        for index, line in enumerate(rows)
        if index not in redrawn or line.strip() or index == last
    )


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def drop_widgets(notebook) -> None:
    """Remove widget outputs (a library's own progress bar drawn as a widget) and the widget state: a
    stored notebook is read where no kernel runs, on GitHub or in the handout, and there a widget is an
    empty box."""
    for cell in notebook.cells:
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
    notebook.metadata.pop("widgets", None)


def render_streams(notebook) -> None:
    """Store each cell's text output as a reader sees it: one chunk per run of the same stream,
    progress bars in their final state (text bars without widgets redraw with carriage returns)."""
    for cell in notebook.cells:
        merged = []
        for output in cell.get("outputs", []):
            if (
                output.output_type == "stream"
                and merged
                and merged[-1].output_type == "stream"
                and merged[-1].name == output.name
            ):
                merged[-1].text += output.text
            else:
                merged.append(output)
        for output in merged:
            if output.output_type == "stream":
                output.text = terminal_text(output.text)
        if "outputs" in cell:
            cell.outputs = [output for output in merged if output.output_type != "stream" or output.text.strip()]


def run_notebook(path: Path, size: str = "full", timeout: int = CELL_TIMEOUT, output: Path | None = None) -> float:
    """Execute ``path`` in its own folder with ``DPO_TUTORIAL_SIZE=size``; save to ``output``; return seconds.

    ``output`` defaults to :func:`output_path` (``path`` itself for a full-size run)."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    output = Path(output) if output is not None else output_path(path, size)
    if size != "full" and output.resolve() == path.resolve():
        raise ValueError(f"{path}: a reduced run would overwrite the stored full-size outputs")
    os.environ["DPO_TUTORIAL_SIZE"] = size
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    with environment_variable(TEXT_BARS_VARIABLE, "1"):  # stored outputs hold text bars, not widgets
        if size == "full":
            client.execute()
        else:
            with temporary_runs_dir(path.stem):
                client.execute()
    seconds = time.perf_counter() - start
    render_streams(notebook)
    drop_widgets(notebook)
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, output)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--size", default="full", choices=["full", "reduced"])
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help=f"where to save the executed notebooks (default: in place at full size, {REDUCED_DIR} when reduced)",
    )
    args = parser.parse_args(argv)
    try:
        outputs = [output_path(path, args.size, args.output_dir) for path in args.notebooks]
    except ValueError as error:
        parser.error(str(error))
    for path, output in zip(args.notebooks, outputs):
        seconds = run_notebook(path, args.size, args.timeout, output)
        print(f"{path}: executed at size={args.size} in {seconds:.0f} s, outputs saved to {output}")


if __name__ == "__main__":
    main()
