"""The packages of onesearch/ depend on each other in one direction: no two import each other, even indirectly."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_graph(top: str = "onesearch") -> dict[str, set[str]]:
    """{subpackage: subpackages its modules import} (imports inside functions count too)."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / top).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        here = parts[1] if len(parts) > 2 else parts[-1]  # onesearch/<pkg>/... or onesearch/<module>.py
        deps = graph.setdefault(here, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                bits = name.split(".")
                if bits[0] == top and len(bits) > 1 and bits[1] != here:
                    deps.add(bits[1])
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_onesearch_packages_import_in_one_direction():
    assert cycles(package_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
