"""The package's shape: imports flow one way (teaching code -> runtime), at the top of each module, without
cycles; every module stays short enough to read in one sitting."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dpo_utils"
MAX_LINES = 400
MAX_TRAINER_LINES = 350


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """The dpo_utils modules ``path`` imports, each with whether the import is at the module's top level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dpo_utils"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            targets = [name for name in names if name in MODULES] or [node.module]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names if alias.name.startswith("dpo_utils")]
        else:
            continue
        found += [(target, id(node) in top) for target in targets]
    return found


GRAPH = {name: {target for target, _ in imports_of(path)} - {name} for name, path in MODULES.items()}


def layer(name: str) -> str:
    return name.split(".")[1] if name.count(".") >= 2 else "core"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_dpo_utils_is_imported_at_the_top_of_each_module(name):
    inside = [target for target, at_top in imports_of(MODULES[name]) if not at_top]
    assert not inside, f"{name} imports {inside} inside a function: move the import to the top"


def test_the_runtime_layer_never_imports_the_teaching_code_or_the_tools():
    wrong = {name: sorted(t for t in GRAPH[name] if layer(t) != "runtime" and t != "dpo_utils") for name in GRAPH}
    assert not {name: t for name, t in wrong.items() if t and layer(name) == "runtime"}


def test_the_library_never_imports_the_tools():
    assert not {
        name: GRAPH[name] for name in GRAPH if layer(name) != "tools" and any(layer(t) == "tools" for t in GRAPH[name])
    }


def test_no_import_cycles():
    done, path = set(), []

    def visit(name):
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name) :] + [name]))
        if name in done or name not in GRAPH:
            return
        path.append(name)
        for target in sorted(GRAPH[name]):
            visit(target)
        path.pop()
        done.add(name)

    for name in sorted(GRAPH):
        visit(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_reads_in_one_sitting(name):
    limit = MAX_TRAINER_LINES if name == "dpo_utils.trainer" else MAX_LINES
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= limit, f"{name} has {lines} lines (at most {limit}): split it by concept"
