"""A ratchet on the size of the code in ``src/discopatch``: no function over 60 lines, no module over 400.

Long functions and modules that predate the rule are listed below with their current length. The lists only
shrink: a listed function or module that grew past its recorded length fails, and one that got back within the
limit fails too, asking for its entry to be deleted, so a split cannot be undone later without the test saying so.

A function's length runs from its ``def`` (decorators not counted) to its last line, docstring included; nested
functions are measured on their own and named through their enclosing ones (``module.outer.inner``,
``module.Class.method``)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "discopatch"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400

#: Functions over the limit today, with their length: split them and delete their entry, never add one.
LONG_FUNCTIONS: dict[str, int] = {}

#: Modules over the limit today, with their length in lines: split them and delete their entry, never add one.
LONG_MODULES: dict[str, int] = {}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _functions(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
    """``(qualified name, length in lines)`` of every function and method under ``node``, nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}.{child.name}"
            if not isinstance(child, ast.ClassDef):
                yield name, (child.end_lineno or child.lineno) - child.lineno + 1
            yield from _functions(child, name)
        else:
            yield from _functions(child, prefix)


def _sources() -> list[tuple[str, str]]:
    return [(_module_name(p), p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))]


def function_lengths() -> dict[str, int]:
    """Every function's and method's length in ``src/discopatch``, by qualified name."""
    return {name: n for module, text in _sources() for name, n in _functions(ast.parse(text), module)}


def module_lengths() -> dict[str, int]:
    """Every module's length in lines, by dotted name."""
    return {module: len(text.splitlines()) for module, text in _sources()}


def ratchet_problems(lengths: dict[str, int], allowed: dict[str, int], limit: int, kind: str) -> list[str]:
    """What breaks the ratchet: an unlisted item over ``limit``, a listed one that grew, or one listed but gone or
    now within the limit (whose entry is to be deleted)."""
    problems = []
    for name, n in sorted(lengths.items()):
        if n > limit and name not in allowed:
            problems.append(f"{kind} {name} has {n} lines (limit {limit}): split it")
        elif name in allowed and n > allowed[name]:
            problems.append(f"{kind} {name} grew to {n} lines from {allowed[name]}: split it rather than grow it")
    for name in sorted(allowed):
        if lengths.get(name, 0) <= limit:
            problems.append(f"{kind} {name} is gone or within {limit} lines now: delete its entry from the list")
    return problems


def test_no_function_is_longer_than_the_limit_unless_listed_and_none_grew() -> None:
    assert ratchet_problems(function_lengths(), LONG_FUNCTIONS, MAX_FUNCTION_LINES, "function") == []


def test_no_module_is_longer_than_the_limit_unless_listed_and_none_grew() -> None:
    assert ratchet_problems(module_lengths(), LONG_MODULES, MAX_MODULE_LINES, "module") == []


def test_the_ratchet_catches_a_new_long_function_a_grown_one_and_a_stale_entry() -> None:
    lengths = {"m.new": 61, "m.grown": 80, "m.fixed": 40, "m.ok": 60, "m.shrunk": 70}
    allowed = {"m.grown": 79, "m.fixed": 90, "m.gone": 70, "m.shrunk": 75}
    problems = ratchet_problems(lengths, allowed, 60, "function")
    assert [p.split()[1] for p in problems] == ["m.grown", "m.new", "m.fixed", "m.gone"]
    assert "delete its entry" in problems[2] and "delete its entry" in problems[3]


def test_lengths_count_from_def_to_last_line_and_name_nested_functions() -> None:
    tree = ast.parse(
        'class C:\n    @staticmethod\n    def f():\n        """doc"""\n\n        def g():\n            pass\n'
    )
    assert dict(_functions(tree, "m")) == {"m.C.f": 5, "m.C.f.g": 2}
