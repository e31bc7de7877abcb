"""ARCHITECTURE.md names every module under ``src/discopatch``, so the map of the package stays complete.

A module ``a/b/c.py`` counts as mentioned when the document contains its path, or when one line of it (a table row)
names its package as ``a/`` (and each sub-package as ``b/``) together with the module as ``c.py`` or ``c`` in
backticks or a list (``monitoring/`` ... ``drift.py``; ``benchmark/`` ... ``datasets/`` ... ``fashion_mnist``).
Top-level modules must appear as ``name.py``. ``__init__.py`` files are covered by their package.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "discopatch"
DOC = ROOT / "ARCHITECTURE.md"


def _modules() -> list[Path]:
    """Every module's path relative to the package, ``__init__.py`` files left out."""
    return sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def _mentioned(rel: Path, doc: str) -> bool:
    path = rel.as_posix()
    if re.search(rf"(?<![\w/]){re.escape(path)}\b", doc):
        return True
    if len(rel.parts) == 1:
        return False
    *dirs, name = rel.parts
    stem = name.removesuffix(".py")
    for line in doc.splitlines():
        if f"`{dirs[0]}/" not in line or not all(f"{d}/" in line for d in dirs[1:]):
            continue
        if re.search(rf"(?<![\w/.]){re.escape(stem)}(\.py)?\b(?!/)", line):
            return True
    return False


def test_every_module_is_in_architecture_md() -> None:
    doc = DOC.read_text(encoding="utf-8")
    missing = [p.as_posix() for p in _modules() if not _mentioned(p, doc)]
    assert not missing, f"ARCHITECTURE.md does not mention: {', '.join(missing)}"


def test_the_check_notices_a_missing_module() -> None:
    """The rule is not vacuous: a module that no line names is reported."""
    assert not _mentioned(Path("monitoring/nowhere.py"), "| `monitoring/` | `drift.py`, `store.py` |")
    assert not _mentioned(Path("nowhere.py"), "`where.py`, `somewhere.py`")
    assert _mentioned(Path("monitoring/drift.py"), "| `monitoring/` | `drift.py`, `store.py` |")
    assert _mentioned(Path("benchmark/datasets/digits.py"), "| `benchmark/` | `datasets/` (`digits`, `noise`) |")
