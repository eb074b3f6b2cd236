"""The package's shape: the import graph between firepbt's modules has no cycle (package
``__init__`` files included), no module imports another module's private names, the decision
core imports no execution, storage or torch, the runner imports no read side, the read side no
controller and no task, the CLI no store; every key of the store's meta table is a named
constant written by one owner; every module appears in the layout page."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "firepbt"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, list[tuple[str, list[str]]]]:
    """Per module: (imported firepbt module, names taken from it), lazy imports included."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "firepbt":
                    continue
                names = [a.name for a in node.names]
                # "from . import x": x is a module
                if node.module is None:
                    for n in names:
                        found.append((f"{target}.{n}", []))
                else:
                    found.append((target, names))
            elif isinstance(node, ast.Import):
                found += [(a.name, []) for a in node.names if a.name.startswith("firepbt")]
        out[name] = found
    return out


def _graph() -> dict[str, set[str]]:
    modules = set(_imports())
    graph: dict[str, set[str]] = {}
    for mod, imps in _imports().items():
        deps = set()
        for target, names in imps:
            for n in names:  # "from .pkg import module"
                if f"{target}.{n}" in modules:
                    deps.add(f"{target}.{n}")
            if target in modules:
                deps.add(target)
        deps.discard(mod)
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exports its modules; an import of the package by one of its
    own modules' dependencies is an import of what it re-exports, not a cycle of design."""
    inits = {m for m in graph if (SRC.parent / m.replace(".", "/") / "__init__.py").exists()}
    return {m: {d for d in deps if d not in inits} for m, deps in graph.items() if m not in inits}


def test_the_import_graph_has_no_cycle():
    assert _cycles(_without_package_inits(_graph())) == []


def test_the_import_graph_has_no_cycle_even_through_package_inits():
    assert _cycles(_graph()) == []


READ_SIDE = ("firepbt.results", "firepbt.lineage", "firepbt.replay", "firepbt.report")


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_runner_imports_no_read_side():
    graph = _graph()
    assert {d for d in graph["firepbt.runner"] if _in(d, (*READ_SIDE, "firepbt.api"))} == set()


def test_the_read_side_imports_no_controller_and_no_task():
    """Reports, lineage and results read what a run recorded (its run facts, its decisions
    with their evidence), never a controller's state or the task registry; FIRE PBT's layout
    arithmetic (``controllers.fire_layout``) is not a controller."""
    graph = _graph()
    bad = {(m, d) for m, deps in graph.items() if _in(m, READ_SIDE) for d in deps
           if _in(d, ("firepbt.tasks",)) or (_in(d, ("firepbt.controllers",))
                                              and d != "firepbt.controllers.fire_layout")}
    assert bad == set()


def test_the_cli_opens_no_store_itself():
    assert {d for d in _graph()["firepbt.cli"] if _in(d, ("firepbt.store",))} == set()


def _meta_calls() -> list[tuple[str, str, ast.expr]]:
    """Every ``.meta(...)``, ``.meta_json(...)`` and ``.set_meta(...)`` call in the package:
    (module, method, its key argument)."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("meta", "meta_json", "set_meta") and node.args):
                out.append((_module_name(path), node.func.attr, node.args[0]))
    return out


def test_every_meta_key_is_a_named_constant_and_each_has_one_owner_that_writes_it():
    import firepbt.store as store

    owners = {key: owner for owner, keys in store.META_OWNERS.items() for key in keys}
    constants = {name: value for name, value in vars(store).items()
                 if isinstance(value, str) and value in owners and name.isupper()}
    assert sorted(owners) == sorted(set(constants.values()))  # one constant per key
    assert len(owners) == sum(len(k) for k in store.META_OWNERS.values())  # one owner per key
    calls = _meta_calls()
    assert calls  # (the scan finds them)
    for module, method, key in calls:
        if module == "firepbt.store" and method != "set_meta":
            continue  # the store's own readers pass their argument through
        assert isinstance(key, ast.Name) and key.id in constants, (module, method,
                                                                    ast.unparse(key))
        if method == "set_meta":
            assert owners[constants[key.id]] == module, (module, key.id)


def test_the_cli_is_imported_by_no_module():
    graph = _graph()
    assert [m for m, deps in graph.items() if "firepbt.cli" in deps and m != "firepbt.__main__"] \
        == []


def test_no_module_imports_another_modules_private_names():
    bad = [(mod, target, n) for mod, imps in _imports().items() for target, names in imps
           for n in names if n.startswith("_") and target != mod and n != "__version__"]
    assert bad == []


# the decision core: pure (numpy/scipy), imported by the running and reading layers only
CORE = ("firepbt.curves", "firepbt.selection", "firepbt.space", "firepbt.schedule",
        "firepbt.records", "firepbt.errors", "firepbt.executors.batched", "firepbt.controllers")


def _in_core(module: str) -> bool:
    return any(module == c or module.startswith(c + ".") for c in CORE)


@pytest.mark.parametrize("core", ["firepbt.curves", "firepbt.selection", "firepbt.space",
                                  "firepbt.schedule", "firepbt.records",
                                  "firepbt.controllers.base", "firepbt.controllers.pbt",
                                  "firepbt.controllers.random_search",
                                  "firepbt.controllers.fire", "firepbt.executors.batched"])
def test_the_decision_core_imports_no_execution_storage_or_torch(core):
    graph = _graph()
    seen, todo = set(), [core]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += graph.get(m, ())
    assert {m for m in seen if not _in_core(m)} == set()
    for m in seen:
        path = SRC.parent / (m.replace(".", "/") + ".py")
        if not path.exists():
            path = SRC.parent / m.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import)
               for a in n.names}
        top |= {n.module.split(".")[0] for n in tree.body
                if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert "torch" not in top, m


def test_importing_firepbt_leaves_scipy_stats_for_when_it_is_needed():
    # scipy.stats takes ~0.6 s to import; every Ray actor and every CLI call imports firepbt,
    # and only FIRE PBT's binomial test needs it (imported there, on first use)
    import subprocess
    import sys

    code = ("import sys, firepbt, firepbt.cli, firepbt.executors.ray, firepbt.tasks.mnist1d; "
            "print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_module_example_and_benchmark_appears_in_the_layout_page():
    page = (SRC.parents[1] / "docs" / "site" / "layout.md").read_text()
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if len(rel.parts) > 1 and f"{rel.parts[0]}/" not in page:
            missing.append(str(rel))
        elif path.name not in page:
            missing.append(str(rel))
    root = SRC.parents[1]
    for folder in ("examples", "benchmarks"):
        missing += [f"{folder}/{p.name}" for p in sorted((root / folder).iterdir())
                    if p.suffix in (".py", ".sh") and p.name not in page]
    assert missing == []
