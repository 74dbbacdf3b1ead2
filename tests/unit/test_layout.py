"""The tree reads as the data flows: imports go one way (item -> code -> index -> session -> product), with no
cycles. Read from the source (every import statement, function-local ones included), nothing is imported. And
the tests sit in their tiers' folders."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("semid", "index", "genrec")

# genrec's layers, bottom first: a module may import only modules of its own layer or below (the most
# specific prefix decides). Two leaves sit low though they live in a folder above: the run-folder names
# (``genrec.run.layout``) and the ranking metrics (``genrec.evaluation.metrics``), which the trainer's
# validation shares with the harness.
LAYERS = {
    "genrec.run.layout": 0,
    "genrec.evaluation.metrics": 0,
    "genrec.data": 1,
    "genrec.model": 2,
    "genrec.rank": 2.5,  # candidate sources, features, rankers (the run config holds their section)
    "genrec.run": 3,  # config, the SID stage, build (make a run)
    "genrec.retriever": 4,  # read a run
    "genrec.rank.train": 4.5,  # the learned ranker's training reads the run through the retriever
    "genrec.evaluation": 5,
    "genrec.report": 6,
    "genrec.review": 6,
    "genrec.serve": 6,
    "genrec.carousel": 6,
    "genrec.run.demo": 7,
    "genrec.cli": 8,
    "genrec": 9,  # the package itself (``from genrec import Retriever``)
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Our modules that ``name`` imports (``from a.b import c`` counts as a.b.c when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
    prefix = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def test_every_genrec_module_has_a_layer():
    assert all(any(n == p or n.startswith(p + ".") for p in LAYERS) for n in MODULES if n.startswith("genrec"))


@pytest.mark.parametrize("leaf, banned", [("semid", ("genrec", "index")), ("index", ("genrec",))])
def test_leaves_import_nothing_above_them(leaf, banned):
    bad = sorted(f"{a} -> {b}" for a, deps in GRAPH.items() if a.split(".")[0] == leaf
                 for b in deps if b.split(".")[0] in banned)
    assert not bad, bad


def test_genrec_imports_only_downwards():
    bad = sorted(f"{a} -> {b}" for a, deps in GRAPH.items() if a.startswith("genrec")
                 for b in deps if b.startswith("genrec") and _layer(b) > _layer(a))
    assert not bad, bad


def test_layer_zero_modules_are_leaves():
    leaves = [n for n in MODULES if n.startswith("genrec") and _layer(n) == 0]
    assert leaves and all(not any(d.startswith("genrec") for d in GRAPH[n]) for n in leaves)


def test_only_entry_points_import_the_cli_and_the_server():
    bad = sorted(f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps
                 if b.startswith(("genrec.cli", "genrec.serve")) and not a.startswith(("genrec.cli", "genrec.serve")))
    assert not bad, bad


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep):] + [node, dep]))
            if dep not in state:
                visit(dep, path + [node])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])


def test_every_test_file_is_in_a_tier_folder():
    """tests/conftest.py gives a test its tier's marker from its folder; a test module outside the tier folders
    would run in no tier, and two modules of one name would clash (the folders hold no ``__init__.py``)."""
    tests = REPO / "tests"
    files = sorted(tests.rglob("test_*.py"))
    outside = [str(f.relative_to(tests)) for f in files if f.parent.parent != tests
               or f.parent.name not in ("unit", "integration", "browser")]
    assert not outside, outside
    names = [f.name for f in files]
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
