"""One version: written once in ``discopatch._version``, read from there by the build and by every module, and the
newest release in CHANGELOG.md."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from discopatch import __version__
from discopatch._version import __version__ as leaf_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "discopatch"


def test_pyproject_reads_the_version_from_the_leaf_module() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "discopatch._version.__version__"}
    assert __version__ == leaf_version


def _imports_version_from_a_package(tree: ast.AST) -> bool:
    """``from . import __version__`` / ``from .. import __version__`` / ``from discopatch import __version__``."""
    return any(
        isinstance(node, ast.ImportFrom)
        and (node.module is None or node.module == "discopatch")
        and any(alias.name == "__version__" for alias in node.names)
        for node in ast.walk(tree)
    )


def test_modules_read_the_version_from_the_leaf_module() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if _imports_version_from_a_package(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == [], f"write 'from ._version import __version__' (or '.._version') in {offenders}"


def test_the_newest_changelog_release_is_the_package_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", text, flags=re.MULTILINE)
    assert releases and releases[0] == __version__, releases
