"""No import cycles inside the package: every module can be understood (and imported) after the ones it uses.

The graph is read from the source with :mod:`ast`, nothing is imported. Its nodes are the modules under
``src/discopatch`` (a package is its ``__init__.py``, named by the package); an edge A -> B means A's code
imports B. The rules:

* every ``import`` statement counts, at module level or inside a function, class, ``try`` or ``if``, because a
  function-level import is still a dependency that runs when the function does; the one exception is the body of
  ``if TYPE_CHECKING:`` (never executed; annotations only), whose ``else`` branch counts again - and a second
  test counts those annotation-only imports too, so that no cycle hides behind one;
* absolute (``import discopatch.x``, ``from discopatch.x import y``) and relative (``from .x import y``,
  ``from .. import y``) imports both count; a name that does not exist as a module is resolved to its longest
  module prefix (``import discopatch.x.y`` where ``y`` is an attribute imports ``discopatch.x``);
* ``from P import x`` where ``P.x`` is a submodule imports that submodule; any other name imported from a package
  (``from . import __version__``) imports the package's ``__init__.py``. ``discopatch/__init__.py`` imports the
  detector (on first use, in its module ``__getattr__``, which counts like any import), so a submodule that the
  detector reaches and that imports a name from the package imports the package back - that is a cycle here, which
  is why the version string lives in the leaf module ``discopatch._version``;
* the parent packages Python initialises implicitly before a submodule (``discopatch/__init__.py`` before
  ``discopatch.detector``) are not edges: counting them would make ``__init__`` "depend" on every
  module below it, and a real problem there still shows up through the explicit rule above;
* dynamic imports (``importlib.import_module``, ``importlib.resources.files``) are not seen; a module importing
  itself is not a cycle.

Beyond "no cycles", the role packages follow the pipeline (ARCHITECTURE.md): :data:`FORBIDDEN` lists, per package
or top-level module, the later stages it must not import (``inference`` never imports ``evaluation``, ``training``,
``monitoring``, ``benchmark`` or ``cli``; ``evaluation`` never imports ``monitoring``, ``benchmark`` or ``cli``;
...), and the :data:`LEAVES` import nothing of the package but ``errors``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "discopatch"

Graph = dict[str, dict[str, str]]  # module -> {imported module: "file:line" of the first import}


def _modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> source file for every ``.py`` under ``root / package`` (packages by their name)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, type_checking: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``; those in the body of ``if TYPE_CHECKING:`` only with ``type_checking``."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            found.append(n)
        elif isinstance(n, ast.If) and _is_type_checking(n.test) and not type_checking:
            stack.extend(n.orelse)
        else:
            stack.extend(ast.iter_child_nodes(n))
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def _ours(name: str, package: str) -> bool:
    return name.split(".")[0] == package


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of ours, or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = ROOT, package: str = PACKAGE, type_checking: bool = False) -> Graph:
    """The intra-package import graph of ``root / package`` under the rules in this file's docstring; with
    ``type_checking`` the annotation-only imports under ``if TYPE_CHECKING:`` are edges too."""
    modules = _modules(root, package)
    graph: Graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]  # the package relative imports start from
        targets: list[tuple[str | None, int]] = []
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree, type_checking):
            if isinstance(node, ast.Import):
                targets += [(_resolve(a.name, modules), node.lineno) for a in node.names if _ours(a.name, package)]
                continue
            if node.level:
                base = here.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if not _ours(source, package):
                continue
            submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
            targets += [(sub, node.lineno) for sub in submodules]
            if len(submodules) < len(node.names):  # some names are attributes of ``source`` itself
                targets.append((_resolve(source, modules), node.lineno))
        edges: dict[str, str] = {}
        for target, lineno in targets:
            if target is not None and target != name:
                edges.setdefault(target, f"{path.relative_to(root).as_posix()}:{lineno}")
        graph[name] = edges
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """Cycles as closed paths of modules: in each strongly connected component, the shortest through each member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph has ~100 nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)

    cycles: list[list[str]] = []
    for comp in sorted(components, key=min):
        for start in sorted(comp):
            cycle = _shortest_cycle(graph, set(comp), start)
            turn = cycle.index(min(cycle[:-1]))  # the same cycle found from another start is written once
            cycle = cycle[turn:-1] + cycle[:turn] + [cycle[turn]]
            if cycle not in cycles:
                cycles.append(cycle)
    return cycles


def _shortest_cycle(graph: Graph, members: set[str], start: str) -> list[str]:
    """Breadth-first search inside a strongly connected component for the shortest closed path through start."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w in members and w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def describe(cycle: list[str], graph: Graph) -> str:
    """``a -> b (a.py:12) -> a (b.py:40)``: each step with the line of the import that makes it."""
    steps = [cycle[0]] + [f"{b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(steps)


def test_no_import_cycles_in_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 30 and "discopatch.inference.engine" in graph["discopatch.detector"]  # the parser sees it
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(c, graph) for c in cycles)


def test_no_cycles_even_through_annotation_only_imports() -> None:
    """An ``if TYPE_CHECKING:`` import never runs, but one that closes a cycle still means two modules each need
    the other to be understood; the lower one names what it needs (a ``Protocol``) instead."""
    graph = import_graph(type_checking=True)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles through annotation-only imports:\n" + "\n".join(
        describe(c, graph) for c in cycles
    )


#: The role packages and modules in pipeline order, and what each must never import (directly, annotation-only
#: imports included): a stage may use the ones before it, never one after it. ``inference`` sits below the trainer,
#: the evaluation and the services even though ``export`` and ``speed`` build on the detector.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "data": ("inference", "artifact", "training", "detector", "evaluation", "scale", "monitoring", "benchmark", "cli"),
    "model": ("data", "inference", "artifact", "training", "detector", "evaluation", "monitoring", "benchmark", "cli"),
    "inference": ("artifact", "training", "evaluation", "scale", "monitoring", "benchmark", "cli"),
    "artifact": ("training", "detector", "evaluation", "scale", "monitoring", "benchmark", "cli"),
    "training": ("detector", "evaluation", "scale", "monitoring", "benchmark", "cli"),
    "detector": ("evaluation", "scale", "monitoring", "benchmark", "cli"),
    "evaluation": ("scale", "monitoring", "benchmark", "cli"),
    "scale": ("evaluation", "monitoring", "benchmark", "cli"),
    "monitoring": ("evaluation", "scale", "benchmark", "cli"),
    "benchmark": ("scale", "monitoring", "cli"),
}
#: Top-level modules that import nothing of the package, so every layer can use them; ``errors``, which imports
#: nothing at all, is the one module they may use, so that their refusals are classes of the hierarchy.
LEAVES = ("_version", "calibration", "errors", "log", "metrics", "patches", "row_layout", "score_modes")
#: The module every leaf may import.
BOTTOM = "errors"


def role(module: str) -> str:
    """The role a module belongs to: its package or module right under the package (``discopatch`` for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def role_violations(graph: Graph) -> list[str]:
    """Every import that goes against :data:`FORBIDDEN` or out of a :data:`LEAVES` module (to another than
    :data:`BOTTOM`), with its line."""
    found = []
    for a, edges in sorted(graph.items()):
        for b, where in sorted(edges.items()):
            if role(b) in FORBIDDEN.get(role(a), ()) or (role(a) in LEAVES and role(b) not in (role(a), BOTTOM)):
                found.append(f"{a} -> {b} ({where})")
    return found


def test_role_packages_import_only_earlier_stages() -> None:
    graph = import_graph(type_checking=True)
    assert {"discopatch.inference.engine", "discopatch.evaluation.evaluate"} <= set(graph)  # the roles exist
    problems = role_violations(graph)
    assert not problems, "imports against the pipeline order:\n" + "\n".join(problems)


def test_the_role_rule_notices_a_backward_import() -> None:
    graph: Graph = {
        "discopatch.inference.speed": {"discopatch.evaluation.demo": "discopatch/inference/speed.py:9"},
        "discopatch.metrics": {"discopatch.config": "discopatch/metrics.py:3"},
        "discopatch.evaluation.demo": {"discopatch.inference.speed": "discopatch/evaluation/demo.py:5"},
    }
    assert role_violations(graph) == [
        "discopatch.inference.speed -> discopatch.evaluation.demo (discopatch/inference/speed.py:9)",
        "discopatch.metrics -> discopatch.config (discopatch/metrics.py:3)",
    ]


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_check_sees_function_level_and_package_imports_but_not_type_checking(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import A\n__version__ = '1'\n",
            "pkg/a.py": "def f():\n    from .b import g\n    return g\n",
            "pkg/b.py": "import pkg.a\n",  # a -> b at function level, b -> a at module level
            "pkg/c.py": "from . import __version__\n",  # imports pkg/__init__.py, which does not reach c
            "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .e import E\nelse:\n    E = 1\n",
            "pkg/e.py": "from . import d\n",  # d -> e only under TYPE_CHECKING: no cycle
            "pkg/sub/__init__.py": "from .x import X\n",
            "pkg/sub/x.py": "from .. import __version__\nX = 1\n",  # x -> pkg/__init__: not reached by pkg either
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b": "pkg/a.py:2"}
    assert graph["pkg.b"] == {"pkg.a": "pkg/b.py:1"}
    assert graph["pkg.c"] == {"pkg": "pkg/c.py:1"}
    assert graph["pkg.d"] == {} and graph["pkg.e"] == {"pkg.d": "pkg/e.py:1"}
    typed = import_graph(tmp_path, "pkg", type_checking=True)
    assert typed["pkg.d"] == {"pkg.e": "pkg/d.py:3"} and ["pkg.d", "pkg.e", "pkg.d"] in find_cycles(typed)
    assert graph["pkg.sub.x"] == {"pkg": "pkg/sub/x.py:1"}
    cycles = find_cycles(graph)
    assert cycles == [["pkg.a", "pkg.b", "pkg.a"]]
    assert describe(cycles[0], graph) == "pkg.a -> pkg.b (pkg/a.py:2) -> pkg.a (pkg/b.py:1)"

    # A submodule reached by the eager __init__ that imports a name from the package closes a cycle.
    _write(tmp_path, {"pkg/a.py": "from . import __version__\n"})
    assert find_cycles(import_graph(tmp_path, "pkg")) == [["pkg", "pkg.a", "pkg"]]
