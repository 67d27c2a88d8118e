"""Every dpo_utils module is listed in help(dpo_utils) and in the module table of docs/dpo_utils.md."""

import re
from pathlib import Path

import dpo_utils

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(path.stem for path in (ROOT / "dpo_utils").glob("*.py") if path.stem != "__init__")


def test_the_package_docstring_lists_every_module():
    listed = set(re.findall(r"^- ``(\w+)``", dpo_utils.__doc__, flags=re.M))
    assert listed == set(MODULES)


def test_the_docs_module_table_lists_every_module():
    page = (ROOT / "docs" / "dpo_utils.md").read_text(encoding="utf-8")
    first_cells = [line.split("|")[1] for line in page.splitlines() if line.startswith("| `")]
    listed = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert listed == set(MODULES)
