"""Docstrings and comments under ``src/`` point only at files inside the repository.

A reference to a Markdown document is either a file the code writes (``summary.md``, ``curve.md``) or a repository
path such as ``docs/METHOD.md``, which must exist; notes kept outside the repository (``../shared``, prototype
findings, lower-case drafts like ``method.md``) must not be cited, since a reader of the package cannot open them.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
OUTSIDE = re.compile(r"\.\./shared|prototype-findings|(?<![\w/])(method|baselines)\.md\b")
DOC_PATH = re.compile(r"(?<![\w/.])((?:docs/)?[A-Z][A-Z_]*\.md)\b")


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_reference_outside_the_repository() -> None:
    hits = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in _sources()
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not hits, "references outside the repository:\n" + "\n".join(hits)


def test_cited_documents_exist() -> None:
    missing = sorted(
        {
            f"{p.relative_to(ROOT)}: {m.group(1)}"
            for p in _sources()
            for m in DOC_PATH.finditer(p.read_text(encoding="utf-8"))
            if not (ROOT / m.group(1)).is_file()
        }
    )
    assert not missing, "documents cited under src/ that do not exist:\n" + "\n".join(missing)
