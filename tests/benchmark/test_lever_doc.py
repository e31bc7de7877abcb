"""The levers tables in docs/BENCHMARKS.md are what ``scripts/lever_table.py`` makes of the committed runs.

Adoption of a lever rests on these rows (mean and seed spread per axis), so a table edited by hand, or a run replaced
without updating the table, fails here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
CURVES = ROOT / "docs" / "benchmarks" / "curve"

#: The groups of each documented ``python scripts/lever_table.py ...`` command.
DOCUMENTED = {
    "fmnist": [
        ("default", [CURVES / "small-image-groups"]),
        ("lr-d-4x", [CURVES / "lever-ttur4"]),
        ("d-steps-2", [CURVES / "lever-dsteps2"]),
    ],
    "photos": [
        ("photos-default", [CURVES / "photos-default"]),
        ("photos-lr-d-4x", [CURVES / "photos-lever-ttur4"]),
    ],
    "fmnist, third round": [
        ("default", [CURVES / "small-image-groups"]),
        ("lr-d-2x", [CURVES / "lever-ttur2"]),
        ("lr-d-4x", [CURVES / "lever-ttur4"]),
        ("tp16", [CURVES / "fmnist-test-patches"]),
        ("tp16@32", [CURVES / "fmnist-test-patches"]),
        ("tp16@64", [CURVES / "fmnist-test-patches"]),
    ],
    "photos, third round": [
        ("photos-128px", [CURVES / "photos-test-patches"]),
        ("photos-128px@32", [CURVES / "photos-test-patches"]),
        ("photos-128px@64", [CURVES / "photos-test-patches"]),
        ("photos-64px", [CURVES / "photos-64px"]),
        ("photos-wide-d", [CURVES / "photos-wide-d"]),
        ("photos-wide-d@64", [CURVES / "photos-wide-d"]),
    ],
    "fmnist, fourth round": [
        ("default@32", [CURVES / "fmnist-test-patches"]),
        ("lecam-0.01", [CURVES / "lever-lecam01", CURVES / "lever-lecam01-2x"]),
        ("lr-decay", [CURVES / "lever-lr-decay"]),
    ],
    "fmnist, fifth round": [
        ("default@32", [CURVES / "fmnist-test-patches"]),
        ("default", [CURVES / "small-image-groups"]),
        ("lecam-0.01", [CURVES / "lever-lecam01-4x"]),
    ],
    "small-long, small folders": [
        ("default-250", [CURVES / "data-size-250"]),
        ("small-long-250@16", [CURVES / "small-long-data-size-250"]),
        ("small-long-250", [CURVES / "small-long-data-size-250"]),
        ("default-2k", [CURVES / "data-size-2k"]),
        ("small-long-2k@16", [CURVES / "small-long-data-size-2k"]),
        ("small-long-2k", [CURVES / "small-long-data-size-2k"]),
    ],
    "fmnist, sixth round": [
        (label, [CURVES / "fmnist-aggregate"])
        for label in ("default", "default#top50", "default#top25", "default#top12", "default#max")
    ],
    "photos, sixth round": [
        (label, [CURVES / "photos-aggregate"])
        for label in ("photos", "photos#top50", "photos#top25", "photos#top12", "photos#max")
    ],
    "photos, small-photo with LeCam": [
        ("small-photo", [CURVES / "photos-aggregate"]),
        ("small-photo-lecam", [CURVES / "photos-small-long"]),
        ("small-photo-lecam#max", [CURVES / "photos-small-long"]),
    ],
    "photos, small-photo-long on 300 crops": [
        ("small-photo", [CURVES / "photos-aggregate"]),
        ("small-photo-300", [CURVES / "photos-data-size-300"]),
        ("small-photo-long", [CURVES / "photos-small-long"]),
        ("small-photo-long-300", [CURVES / "photos-small-long-300"]),
    ],
    "fmnist, seventh round": [
        (label, [CURVES / "fmnist-relative"])
        for label in ("default", "default#gap12", "default#spread", "default#mean+gap12")
    ],
    "photos, seventh round": [
        (label, [CURVES / "photos-early"]) for label in ("photos", "photos#gap12", "photos#spread", "photos#mean+gap12")
    ],
    "photos, eighth round": [
        ("photos", [CURVES / "photos-early"]),
        ("photos-prior-0.1", [CURVES / "photos-prior01"]),
        ("photos-prior-0", [CURVES / "photos-prior0"]),
        ("photos-recon-0", [CURVES / "photos-recon0"]),
    ],
    "fmnist, eighth round": [
        ("default", [CURVES / "fmnist-relative"]),
        ("default-prior-0", [CURVES / "fmnist-prior0"]),
    ],
    "photos, fourth round": [
        ("photos-128px@32", [CURVES / "photos-test-patches"]),
        ("photos-augment", [CURVES / "photos-augment"]),
        ("photos-lecam-0.01", [CURVES / "photos-lecam01"]),
        ("photos-lr-decay", [CURVES / "photos-lr-decay"]),
    ],
}


def _script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # lever_table reuses data_size_table's cells
    spec = importlib.util.spec_from_file_location("lever_table", ROOT / "scripts" / "lever_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("protocol", sorted(DOCUMENTED))
def test_every_lever_row_in_the_docs_comes_from_a_committed_run(protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    script, doc = _script(monkeypatch), (ROOT / "docs" / "BENCHMARKS.md").read_text()
    rows = script.table(DOCUMENTED[protocol])[2:]
    assert len(rows) >= len(DOCUMENTED[protocol])
    missing = [row for row in rows if row not in doc]
    assert not missing, f"rows not in docs/BENCHMARKS.md (re-run the command there): {missing}"


def test_a_row_at_another_test_patch_count_reads_the_paired_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """``LABEL@K`` rows come from the same runs scored with K patches: same game, other AUROCs."""
    script = _script(monkeypatch)
    own, more = (script.table([(label, [CURVES / "fmnist-test-patches"])])[2] for label in ("x", "x@32"))
    assert own.split("|")[-3:] == more.split("|")[-3:] and own.split("|")[4:13] != more.split("|")[4:13]


def test_a_row_with_another_patch_aggregate_reads_the_paired_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """``LABEL#AGG`` rows come from the same runs scored with that patch aggregate: same game, other AUROCs."""
    script = _script(monkeypatch)
    own, agg = (script.table([(label, [CURVES / "fmnist-aggregate"])])[2] for label in ("x", "x#max"))
    assert own.split("|")[-3:] == agg.split("|")[-3:] and own.split("|")[4:13] != agg.split("|")[4:13]


def test_a_row_shows_the_seed_spread_and_the_game(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _script(monkeypatch).table([("x", [CURVES / "lever-ttur4"])])
    first = [c.strip() for c in rows[2].split("|")]
    assert first[1:4] == ["x", "1380", "3"] and "+/-" in first[4]
    real, recon, gen = (float(v) for v in first[-2].split("/"))
    assert 0 <= recon < real <= 1 and 0 <= gen < real
