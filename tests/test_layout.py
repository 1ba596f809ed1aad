"""The rooms (README "Layout"), checked from the source: who may import whom, no private names across
modules, no import cycles, function-local imports only to defer a heavy dependency (with a comment)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("common", "runtime", "power", "bench", "train", "convert", "models")
# What each room may import of edge_slm besides itself.
ALLOWED = {
    "common": set(),
    "power": {"common"},
    "runtime": {"common", "power"},
    "models": {"common"},
    "convert": {"common", "runtime", "models"},
    "train": {"common", "runtime", "convert", "models"},
    "bench": {"common", "runtime", "power", "convert", "models"},
}


def modules():
    for room in ROOMS:
        for path in sorted((REPO / room).glob("*.py")):
            name = f"edge_slm.{room}" if path.stem == "__init__" else f"edge_slm.{room}.{path.stem}"
            yield room, name, path


def imports_of(name: str, path: Path):
    """(imported module, imported names, node, is function-local) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    local_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local_lines.update(n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node, node.lineno in local_lines
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            if node.module is None or (node.level and not node.module):
                for n in names:  # `from . import hub`: a module
                    yield f"{base}.{n}", [], node, node.lineno in local_lines
            else:
                yield base, names, node, node.lineno in local_lines


ALL = list(modules())
MODULE_NAMES = {name for _, name, _ in ALL}


def test_every_room_has_modules():
    assert {room for room, _, _ in ALL} == set(ROOMS)


@pytest.mark.parametrize("room,name,path", ALL, ids=[name for _, name, _ in ALL])
def test_rooms_import_only_what_they_may(room, name, path):
    for module, _, node, _ in imports_of(name, path):
        if module.startswith("edge_slm."):
            other = module.split(".")[1]
            assert other == room or other in ALLOWED[room], f"{path.name}:{node.lineno} {room} imports {module}"


@pytest.mark.parametrize("room,name,path", ALL, ids=[name for _, name, _ in ALL])
def test_no_private_name_is_imported_across_modules(room, name, path):
    for module, names, node, _ in imports_of(name, path):
        if module.startswith("edge_slm."):
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{path.name}:{node.lineno} imports {private} from {module}"


@pytest.mark.parametrize("room,name,path", ALL, ids=[name for _, name, _ in ALL])
def test_function_local_imports_say_why(room, name, path):
    """A function-local import only defers a heavy or optional dependency, and says so."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for module, _, node, local in imports_of(name, path):
        if local:
            said = (lines[node.lineno - 2].strip().startswith("#") or "#" in lines[node.lineno - 1]
                    or "#" in lines[node.end_lineno - 1])
            assert said, \
                f"{path.name}:{node.lineno} imports {module} inside a function without saying why"


def test_no_import_cycles():
    graph = {name: set() for name in MODULE_NAMES}
    for _, name, path in ALL:
        for module, names, _, _ in imports_of(name, path):
            targets = [module] + [f"{module}.{n}" for n in names]
            graph[name].update(t for t in targets if t in MODULE_NAMES and t != name)
    for name in graph:  # a package's __init__ is imported before any of its modules: not a cycle edge
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checks_would_notice(tmp_path):
    """Guard against checks that cannot fail: a planted runtime -> bench import and a private name."""
    planted = tmp_path / "planted.py"
    planted.write_text("from edge_slm.bench.study import _finished_keys\n")
    [(module, names, _, _)] = list(imports_of("edge_slm.runtime.planted", planted))
    assert module.split(".")[1] not in ALLOWED["runtime"] and names == ["_finished_keys"]
