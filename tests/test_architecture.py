"""The package's shape, checked: imports point one way (cli -> run/report -> store -> tasks ->
data -> config -> quant -> io), no module imports another module's private name, there are no
import circles between modules, and no source file grows past 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "qbench"

#: top-level part of qbench -> its layer; a module may import its own layer's parts and lower ones
LAYERS = {
    "io": 0,
    "progress": 0,
    "device": 0,
    "quant": 1,
    "config": 2,
    "data": 3,
    "tasks": 4,
    "store": 5,
    "run": 6,
    "report": 6,
    "cli": 7,
    "__main__": 8,
}
#: parts of one layer that must not import each other
PEERS = [{"run", "report"}]
#: files that are data rather than code (a grammar's word lists and templates)
DATA_TABLES = {"data/synthetic_mt.py"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in the file, function-local too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((base, [a.name for a in node.names]))
    return out


def qbench_edges(mods: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """module -> the qbench modules it imports (a name imported from a package that is one of its
    modules counts as that module)."""
    mods = modules() if mods is None else mods
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for target, names in imports(path, m):
            if not target.startswith("qbench"):
                continue
            for n in names or [""]:
                sub = f"{target}.{n}"
                edges[m].add(sub if sub in mods else target)
    return edges


def part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for m, targets in edges.items():
        if m == "qbench":
            continue
        for t in targets:
            if t == "qbench" or part(t) == part(m):
                continue
            a, b = part(m), part(t)
            if LAYERS[b] > LAYERS[a] or any({a, b} == peers for peers in PEERS):
                wrong.append(f"{m} -> {t}")
    return sorted(wrong)


def test_imports_point_down_the_layers():
    wrong = upward_imports(qbench_edges())
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_circles():
    edges = qbench_edges()
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges.get(m, ())):
            if t == m or t not in edges:
                continue
            if state.get(t) == 1:
                circles.append(" -> ".join([*stack[stack.index(t) :], t]))
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    # a package's __init__ re-exporting its modules is not a circle of the code's design
    circles = [c for c in circles if not _through_own_init(c)]
    assert not circles, "import circles:\n" + "\n".join(circles)


def _through_own_init(circle: str) -> bool:
    mods = circle.split(" -> ")
    return any(
        n != m and m.startswith(n + ".") for n in mods for m in mods if n in modules() and _is_package(n)
    )


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def test_no_private_names_imported_from_other_modules():
    wrong = []
    for m, path in modules().items():
        for target, names in imports(path, m):
            if target.startswith("qbench") or target.startswith("."):
                wrong += [f"{m}: {target}.{n}" for n in names if n.startswith("_") and n != "__version__"]
    assert not wrong, "\n".join(wrong)


def test_no_source_file_over_600_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600 and str(p.relative_to(PACKAGE)) not in DATA_TABLES
    }
    assert not long, long


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The check above must be able to fail: an import from quant up into run is reported."""
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from qbench.run.engine import run_recipe\n")
    edges = qbench_edges({**modules(), "qbench.quant.fake": fake})
    assert upward_imports(edges) == ["qbench.quant.fake -> qbench.run.engine"]
