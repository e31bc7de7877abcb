"""CONTRIBUTING.md's recipes stay true: each names a test that exercises it, and every test and path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "CONTRIBUTING.md"
RECIPES = ("Add a score mode", "Add a baseline", "Add a corruption", "Add an HTTP route")


def _sections() -> dict[str, str]:
    """Second-level heading -> its text."""
    parts = re.split(r"^## (.+)$", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_recipe_is_exercised_by_a_test_that_exists() -> None:
    sections = _sections()
    assert set(RECIPES) <= set(sections), sorted(sections)
    for title in RECIPES:
        found = re.findall(r"^Exercised by: `(tests/[\w/]+\.py)::(test_\w+)`$", sections[title], flags=re.MULTILINE)
        assert found, f"{title}: no 'Exercised by' line"
        for path, name in found:
            source = (ROOT / path).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, flags=re.MULTILINE), f"{title}: {path}::{name} is missing"


def test_every_path_and_test_the_recipes_name_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:src|tests)/[\w/.]+\.py)(?:::(test_\w+))?`", text))
    assert len(paths) > 10
    for path, name in paths:
        assert (ROOT / path).is_file(), path
        if name:
            assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), f"{path}::{name}"
