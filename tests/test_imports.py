"""The package's import rules, read from its source (``ast``), so that an upward arrow or a circle fails.

* the core (``conv``, ``shuffle``, ``unit``, ``model``, ``complexity``, ``reference``, ``_checks`` and the
  package's ``__init__``) imports only torch, the standard library and itself;
* ``runtime`` and ``stacked`` (copies of a network run as one) import nothing of the package;
* training (``data``, ``distributed``, ``bookkeeping``, ``train``, ``runs``) imports the core, ``runtime``,
  ``stacked`` and the training modules below it, in that order;
* benchmarks (``bench/``) import the core, ``data``, ``runtime``, ``stacked`` and each other, never the
  trainer.

Imports under ``if __name__ == "__main__":`` run only as a script, after the module has loaded, and are not
arrows of the package (``train.py`` hands its command line to ``runs.py`` that way).
"""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "shufflenet"
CORE = {"shufflenet", "shufflenet._checks", "shufflenet.conv", "shufflenet.shuffle", "shufflenet.unit",
        "shufflenet.model", "shufflenet.complexity", "shufflenet.reference"}
TRAINING = ["shufflenet.data", "shufflenet.distributed", "shufflenet.bookkeeping", "shufflenet.train",
            "shufflenet.runs"]  # bottom up
SHARED = ("shufflenet.runtime", "shufflenet.stacked")  # below both wings, above nothing of the package


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_main_guard(node) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ('__name__ == "__main__"',
                                                                   "__name__ == '__main__'")


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; for ``from . import x``, the submodule ``x`` when it
    is one), outside a ``__main__`` guard, at any depth (a function's lazy import counts too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = {id(n) for guard in ast.walk(tree) if is_main_guard(guard) for n in ast.walk(guard)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = ".".join(base[:len(base) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                submodule = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").is_file() or \
                    (PACKAGE.parent / sub.replace(".", "/") / "__init__.py").is_file()
                found.add(sub if submodule else target)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}




def allowed(source: str, target: str) -> bool:
    """May ``source`` import the package module ``target``?"""
    if source in CORE:
        return target in CORE
    if source in SHARED:
        return False
    if source in TRAINING:
        return target in CORE or target in SHARED or (
            target in TRAINING and TRAINING.index(target) < TRAINING.index(source))
    if source.startswith("shufflenet.bench"):
        return target in CORE or target in (*SHARED, "shufflenet.data") or \
            target.startswith("shufflenet.bench")
    raise AssertionError(f"{source} belongs to no layer: add it to the rules in {__file__}")


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Every import against the rules, and every circle, as a line each."""
    problems = [f"{source} imports {target}" for source, targets in edges.items()
                for target in sorted(targets)
                if target.split(".")[0] == "shufflenet" and target != source and not allowed(source, target)]
    package_edges = {s: {t for t in ts if t in edges and t != s} for s, ts in edges.items()}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(package_edges[node]):
            if state.get(nxt) == "open":
                problems.append("circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(package_edges):
        if node not in state:
            visit(node, [node])
    return problems


def test_the_package_follows_its_import_rules():
    edges = graph()
    assert "shufflenet.runs" in edges and "shufflenet.bench.timing" in edges  # the walk found the files
    assert "shufflenet.bookkeeping" in edges["shufflenet.train"]              # and reads the imports
    assert "shufflenet.train" not in edges["shufflenet.data"]
    assert violations(edges) == []


@pytest.mark.parametrize("extra, expected", [
    (("shufflenet.model", "shufflenet.data"), "shufflenet.model imports shufflenet.data"),
    (("shufflenet.bench.pipeline", "shufflenet.train"), "shufflenet.bench.pipeline imports shufflenet.train"),
    (("shufflenet.data", "shufflenet.runs"), "shufflenet.data imports shufflenet.runs"),
    (("shufflenet.runtime", "shufflenet.conv"), "shufflenet.runtime imports shufflenet.conv"),
    (("shufflenet.conv", "shufflenet.unit"), "circle: shufflenet.conv -> shufflenet.unit -> shufflenet.conv"),
])
def test_an_upward_arrow_or_a_circle_is_caught(extra, expected):
    edges = graph()
    source, target = extra
    edges[source] = edges[source] | {target}
    assert expected in violations(edges)


def test_the_core_needs_only_torch():
    third_party = {name.split(".")[0] for module, targets in graph().items() if module in CORE
                   for name in targets if name.split(".")[0] not in sys.stdlib_module_names}
    assert third_party == {"torch", "shufflenet"}
