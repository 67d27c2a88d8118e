"""Every dpo_utils module is listed in its package's docstring (help(dpo_utils), help(dpo_utils.tools), ...)
and in the module table of docs/dpo_utils.md, by its name inside dpo_utils (``tools.colab``)."""

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dpo_utils"
MODULES = sorted(
    ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    for path in PACKAGE.rglob("*.py")
    if path.stem != "__init__"
)
SUBPACKAGES = sorted({name.rpartition(".")[0] for name in MODULES})  # "" is dpo_utils itself


def test_each_package_docstring_lists_its_modules():
    for package in SUBPACKAGES:
        module = importlib.import_module(f"dpo_utils.{package}".rstrip("."))
        listed = set(re.findall(r"^- ``(\w+)``", module.__doc__, flags=re.M))
        own = {name.rpartition(".")[2] for name in MODULES if name.rpartition(".")[0] == package}
        assert listed == own, f"dpo_utils.{package}".rstrip(".")


def test_the_docs_module_table_lists_every_module():
    page = (ROOT / "docs" / "dpo_utils.md").read_text(encoding="utf-8")
    first_cells = [line.split("|")[1] for line in page.splitlines() if line.startswith("| `")]
    listed = {name for cell in first_cells for name in re.findall(r"`([\w.]+)`", cell)}
    assert listed == set(MODULES)


def test_the_layer_figure_places_every_module():
    page = (ROOT / "docs" / "dpo_utils.md").read_text(encoding="utf-8")
    figure = page.split("```mermaid", 1)[1].split("```", 1)[0]
    placed = set(re.findall(r"[a-z_]+", figure))
    assert {name.rpartition(".")[2] for name in MODULES} <= placed
