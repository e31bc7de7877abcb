"""The contributor tooling agrees with the project: make targets, the slow marker, pre-commit hooks, composed extras."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _make_targets() -> dict[str, str]:
    """Each Makefile target and its recipe (the lines under it)."""
    targets: dict[str, str] = {}
    name = None
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([a-z][a-z-]*):(.*)$", line)
        if match:
            name = match.group(1)
            targets[name] = match.group(2)
        elif name and line.startswith("\t"):
            targets[name] += "\n" + line.strip()
    return targets


def test_make_targets_run_what_the_suite_checks() -> None:
    targets = _make_targets()
    assert {"lint", "typecheck", "test", "test-fast"} <= set(targets)
    assert "ruff check src tests scripts" in targets["lint"]  # as tests/test_lint.py
    assert "mypy --strict" in targets["typecheck"]
    assert targets["test"].strip().endswith("-m pytest")  # the README's command: everything
    assert '-m pytest -m "not slow"' in targets["test-fast"]


def test_the_slow_marker_is_registered_and_never_deselected_by_default() -> None:
    options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert any(m.startswith("slow:") for m in options["markers"])
    assert "-m" not in options.get("addopts", "").split()  # `python -m pytest` still runs the slow tests


def test_pre_commit_runs_ruff_and_mypy() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    assert any(e.startswith("ruff check") for e in entries) and any(e.startswith("mypy --strict") for e in entries)


def test_the_test_extra_composes_the_other_extras_instead_of_copying_them() -> None:
    extras: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
    (composed,) = [r for r in extras["test"] if r.startswith("discopatch[")]
    included = set(composed[len("discopatch[") : -1].split(","))
    assert included == set(extras) - {"test", "dev"}, "every runtime extra is tested"

    def name(requirement: str) -> str:
        return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower()

    copied = {name(r) for r in extras["test"]} & {name(r) for extra in included for r in extras[extra]}
    assert not copied, f"listed in the test extra and in an extra it includes: {sorted(copied)}"
