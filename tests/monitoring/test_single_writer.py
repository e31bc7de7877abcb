"""Two servers on one database and one stream must not silently diverge.

Each server keeps the stream's drift monitor in memory. A write now carries the image count its state was computed
from; when another writer got in first the store refuses it (``StreamConflict``), and the recorder reloads the
state from the database and recomputes, so the stored state always counts every stored image.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from discopatch.monitoring.drift import DriftConfig
from discopatch.monitoring.service import create_app
from discopatch.monitoring.store import Store, StreamConflict
from discopatch.monitoring.streams import Item, StreamRecorder

CONFIG = DriftConfig(window_size=40, min_window=10, ert=500)
#: What a stream's verdict is made of (timestamps left out: they differ between runs).
VERDICT = ("time", "n_window", "n_flagged", "alarm_rate", "is_drift", "p_val", "distance", "drifting_tests")


def _verdict(status: dict) -> dict:
    cusum = status["per_test"]["cusum"]
    return {k: status[k] for k in VERDICT} | {"cusum": cusum["distance"], "n_alarms": cusum["n_alarms"]}


def test_two_servers_on_one_stream_agree_with_a_single_writer(
    trained_detector, db_url, stream_name, tmp_path, id_pngs, blank_png
) -> None:
    """Batches alternate between two app instances on one database: both, and a third started afterwards, report
    the verdict a single server gives for the same images in the same order (before: each counted only its own)."""
    batches = [
        [Item(f"id{k}-{j}.png", id_pngs[k * 8 + j]) for j in range(8)]
        if k < 3
        else [Item(f"b{k}-{j}.png", blank_png) for j in range(8)]
        for k in range(6)
    ]
    reference = StreamRecorder(trained_detector, Store(f"sqlite:///{tmp_path / 'ref.db'}"), CONFIG)
    try:
        for batch in batches:
            reference.record("ref", batch)
        expected = _verdict(reference.status("ref"))
        expected_alerts = [a["kind"] for a in reference.store.alerts("ref")]
    finally:
        reference.close()
    assert expected["time"] == 48 and expected["is_drift"]  # the blanks drift: the test exercises the alerts too

    url = f"/v1/streams/{stream_name}"
    app_a, app_b = (create_app(trained_detector, db_url, drift_config=CONFIG) for _ in range(2))
    with TestClient(app_a) as a, TestClient(app_b) as b:
        for k, batch in enumerate(batches):
            client = a if k % 2 == 0 else b
            files = [("images", (it.source_id, it.data, "image/png")) for it in batch]
            r = client.post(f"{url}/images", files=files)
            assert r.status_code == 200, r.text
            assert [x["seq"] for x in r.json()["results"]] == list(range(k * 8 + 1, k * 8 + 9))
        assert _verdict(a.get(f"{url}/status").json()) == expected  # the last write went to b: a notices it
        assert _verdict(b.get(f"{url}/status").json()) == expected
        assert [x["kind"] for x in a.get(f"{url}/alerts").json()] == expected_alerts
    with TestClient(create_app(trained_detector, db_url, drift_config=CONFIG)) as c:  # resumed from the stored state
        assert _verdict(c.get(f"{url}/status").json()) == expected


def test_a_write_computed_from_a_stale_state_is_refused(db_url, stream_name) -> None:
    """The store's version check: a state computed from 1 image never replaces one that counts 2."""
    store = Store(db_url)
    try:
        row = {"time": 1.0, "source_id": "x", "score": 0.1, "p_value": 0.5, "is_ood": False, "error": None}
        store.record(stream_name, [row], {"t": 1}, expected_n=0)
        store.record(stream_name, [row], {"t": 2}, expected_n=1)  # the other writer
        with pytest.raises(StreamConflict, match="has 2 images, this writer expected 1"):
            store.record(stream_name, [row], {"t": "stale"}, expected_n=1)
        state, window, n = store.load_stream_version(stream_name, 10, None)
        assert (state, len(window), n) == ({"t": 2}, 2, 2)
    finally:
        store.close()
