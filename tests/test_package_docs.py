"""Every dpo_utils module is listed in help(dpo_utils) and in README's module table."""

import re
from pathlib import Path

import dpo_utils

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(path.stem for path in (ROOT / "dpo_utils").glob("*.py") if path.stem != "__init__")


def test_the_package_docstring_lists_every_module():
    listed = set(re.findall(r"^- ``(\w+)``", dpo_utils.__doc__, flags=re.M))
    assert listed == set(MODULES)


def test_the_readme_module_table_lists_every_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## `dpo_utils`", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    listed = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert listed == set(MODULES)
