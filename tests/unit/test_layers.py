"""The package's layers, read from its own imports: strictly downward, no circles."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "xdpfwd"

# Lower layers may be imported by higher ones, never the other way round.
LAYERS = [
    {"xdpfwd.errors", "xdpfwd.interrupts", "xdpfwd.progress", "xdpfwd.kernel"},
    {"xdpfwd.model"},
    {"xdpfwd.state"},
    {"xdpfwd.ops"},
    {"xdpfwd.render"},
    {"xdpfwd.options", "xdpfwd.cli", "xdpfwd.launch", "xdpfwd.__main__", "xdpfwd"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """xdpfwd modules path imports at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xdpfwd"):
            submodules = {f"{node.module}.{a.name}" for a in node.names} & MODULES
            # "from pkg import module" imports the module; "from pkg import name", pkg.
            found |= submodules or {node.module}
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("xdpfwd"))
    return {name for name in found if name in MODULES} - {module_name(path)}


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "xdpfwd"):
            return level
    assert module == "xdpfwd", f"{module} is in no layer"
    return len(LAYERS) - 1


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_down_or_sideways_within_a_layer(module):
    upward = [dep for dep in GRAPH[module] if layer_of(dep) > layer_of(module)]
    assert not upward, f"{module} imports a higher layer: {upward}"


def test_no_ops_module_imports_a_sibling():
    for module, deps in GRAPH.items():
        if module.startswith("xdpfwd.ops."):
            siblings = {d for d in deps if d.startswith("xdpfwd.ops")}
            assert not siblings, f"{module} imports {siblings}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("xdpfwd.render")))
def test_render_imports_only_the_model(module):
    others = {d for d in GRAPH[module] if not d.startswith(("xdpfwd.model", "xdpfwd.render"))}
    assert others == set()


def test_no_import_circle():
    state: dict[str, str] = {}

    def visit(module, path):
        state[module] = "open"
        for dep in GRAPH.get(module, ()):
            # "from xdpfwd.model import X" names the package: its __init__ is the module.
            if state.get(dep) == "open":
                pytest.fail(" -> ".join([*path, module, dep]))
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


def test_each_operation_of_the_facade_is_a_function_once_every_module_is_loaded():
    # Importing xdpfwd.ops.NAME binds NAME on the package: an operation named like
    # one of its modules would be that module, not the function, from then on.
    import importlib
    import inspect

    from xdpfwd import ops

    for module in sorted(m for m in MODULES if m.startswith("xdpfwd.ops.")):
        importlib.import_module(module)
    for name in ops.__all__:
        assert inspect.isfunction(getattr(ops, name)), name
