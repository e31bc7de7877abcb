"""The data-size tables in docs/BENCHMARKS.md are what ``scripts/data_size_table.py`` makes of the committed runs.

The README's "how many images" advice and ``fit``'s small-folder warning rest on these numbers, so a table edited
by hand, or a run replaced without updating the table, fails here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
CURVES = ROOT / "docs" / "benchmarks" / "curve"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("data_size_table", ROOT / "scripts" / "data_size_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _size_folders() -> list[Path]:
    """The folders the documented command globs (``data-size-*[0-9k]``): one per training-set size."""
    return sorted(p for p in CURVES.glob("data-size-*") if p.name[-1].isdigit() or p.name.endswith("k"))


def test_every_data_size_row_in_the_docs_comes_from_a_committed_run() -> None:
    script, doc = _script(), (ROOT / "docs" / "BENCHMARKS.md").read_text()
    folders = _size_folders()
    assert {p.name for p in folders} >= {"data-size-250", "data-size-1k", "data-size-2k"}
    rows = script.table(folders, every_step=False)[2:]
    rows += script.table([CURVES / "small-image-groups"], every_step=False, step=1380)[2:]
    rows += script.table([CURVES / "data-size-2k-steps"], every_step=True)[2:]
    small_long = [CURVES / "small-long-data-size-250", CURVES / "small-long-data-size-2k"]
    rows += script.table(small_long, every_step=True)[2:]  # the small-long preset's curve (memorisation column)
    photos_300 = [CURVES / "photos-data-size-300", CURVES / "photos-small-long-300"]
    rows += script.table(photos_300, every_step=True)[2:]  # small-photo and small-photo-long on 300 crops
    missing = [row for row in rows if row not in doc]
    assert not missing, f"rows not in docs/BENCHMARKS.md (re-run the commands there): {missing}"


def test_the_table_reports_seed_spread_and_the_memorisation_range() -> None:
    script = _script()
    rows = script.table([CURVES / "data-size-250"], every_step=False)
    header, cells = rows[0].split("|"), rows[2].split("|")
    assert len(header) == len(cells)
    assert cells[3].strip() == "3" and "+/-" in cells[4]
    low, high = (float(v) for v in cells[-2].strip().split("-"))
    assert 0 <= low <= high <= 100


def test_an_axis_a_run_could_not_measure_is_a_dash_not_a_number() -> None:
    """A set missing on the run's machine (``data.skipped``) leaves its axis empty; the table must not invent it."""
    cell = _script()._cell
    assert cell([None, 0.7]) == "-" and cell([0.5]) == "50.0" and cell([0.5, 0.7]) == "60.0 +/- 14.1"
