"""Test-suite defaults: reduced sizes and no hub access, inherited by nbval's kernels."""

import os

os.environ.setdefault("DPO_TUTORIAL_SIZE", "reduced")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
