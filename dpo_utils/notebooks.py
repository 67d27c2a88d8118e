"""Re-run notebooks at full size and store their outputs in place.

    dpo-run-notebook notebooks/01_mse_toy_gradient_descent.ipynb
    python -m dpo_utils.notebooks notebooks/*.ipynb --size full

Committed notebooks carry the outputs of a full-size run (README's rule); this is the
command that makes them. Each notebook prints ``describe_run()`` near the top, so the stored
outputs say which size and which device produced them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def run_notebook(path: Path, size: str = "full", timeout: int = 3600) -> float:
    """Execute ``path`` in its own folder with ``DPO_TUTORIAL_SIZE=size``; save outputs; return seconds."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["DPO_TUTORIAL_SIZE"] = size
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(notebook, path)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--size", default="full", choices=["full", "reduced"])
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        seconds = run_notebook(path, args.size, args.timeout)
        print(f"{path}: executed at size={args.size} in {seconds:.0f} s, outputs saved")


if __name__ == "__main__":
    main()
