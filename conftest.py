"""Test-suite defaults: reduced sizes and no hub access, inherited by nbval's kernels.

Each notebook's kernel writes its runs (checkpoints, final models: about 1 GB per SmolLM2 run)
into a temporary folder of its own, removed when the notebook's last cell has run.
"""

import os
from contextlib import ExitStack

import pytest

os.environ.setdefault("DPO_TUTORIAL_SIZE", "reduced")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_notebook_runs = {}  # notebook path -> ExitStack holding its temporary runs folder


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before a notebook's kernel starts (nbval starts it when the first cell is set up)."""
    if item.path.suffix == ".ipynb" and item.path not in _notebook_runs:
        from dpo_utils.tools.notebooks import temporary_runs_dir

        stack = ExitStack()
        stack.enter_context(temporary_runs_dir(item.path.stem))
        _notebook_runs[item.path] = stack


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After the notebook's last cell, once nbval has stopped its kernel."""
    try:
        return (yield)
    finally:
        if item.path in _notebook_runs and (nextitem is None or nextitem.path != item.path):
            _notebook_runs.pop(item.path).close()


def pytest_sessionfinish(session):
    for stack in _notebook_runs.values():
        stack.close()
    _notebook_runs.clear()
