"""The store and the recorder on SQLite and, when DISCOPATCH_TEST_POSTGRES_URL is set, on a real PostgreSQL."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from discopatch.monitoring.drift import DriftConfig
from discopatch.monitoring.store import Store, StreamNotFound
from discopatch.monitoring.streams import Item, StreamRecorder


def _row(t: float, score: float | None, **kw) -> dict:
    return {"time": t, "source_id": kw.get("source_id"), "score": score, "p_value": kw.get("p_value"),
            "is_ood": kw.get("is_ood"), "error": kw.get("error"), "thumbnail": kw.get("thumbnail")}  # fmt: skip


def test_record_and_read_back(db_url: str, stream_name: str) -> None:
    store = Store(db_url)
    try:
        ids = store.record(
            stream_name,
            [_row(1.0, 0.25, source_id="a", p_value=0.5, is_ood=False), _row(2.0, None, error="b: bad")],
            {"t": 1, "cusum": 0.5},
            [{"time": 2.0, "kind": "drift", "tests": ["ks"], "p_val": 1e-4, "alarm_rate": 0.3, "detail": {"x": 1}}],
        )
        assert [seq for _, seq in ids] == [1, 2]
        more = store.record(stream_name, [_row(3.0, 0.9, source_id="c", is_ood=True, thumbnail=b"\x89PNG..")], {"t": 2})
        assert more[0][1] == 3
        rows = store.images(stream_name)
        assert [r["seq"] for r in rows] == [1, 2, 3]
        assert rows[0]["score"] == 0.25 and rows[1]["error"] == "b: bad" and rows[2]["has_thumbnail"]
        assert store.images(stream_name, flagged=True)[0]["source_id"] == "c"
        assert store.images(stream_name, limit=1)[0]["seq"] == 3
        assert store.thumbnail(more[0][0]) == b"\x89PNG.."
        (alert,) = store.alerts(stream_name)
        assert alert["kind"] == "drift" and alert["seq"] == 2 and alert["tests"] == ["ks"]
        assert alert["detail"] == {"x": 1}
        assert store.count_alerts(stream_name) == 1
        state, window = store.load_stream(stream_name, window_size=10, window_seconds=None)
        assert state == {"t": 2} and window == [(1.0, 0.25), (3.0, 0.9)]
        assert store.load_stream(stream_name, window_size=1, window_seconds=None)[1] == [(3.0, 0.9)]
        assert store.sources(stream_name) == {"a", "c"}
        assert stream_name in {s["name"] for s in store.streams()}
        assert store.stream_info(stream_name)["n_images"] == 3
        with pytest.raises(StreamNotFound):
            store.images("no-such-stream-" + stream_name)
        assert store.load_stream("no-such-stream-" + stream_name, 10, None) == ({}, [])
    finally:
        store.close()


def test_explanations_are_kept_with_their_images(db_url: str, stream_name: str) -> None:
    """A row's explanation lands in dp_explanations in the same transaction, and reads back equal."""
    store = Store(db_url)
    data = {"score": 0.9, "corners": [[0, 8], [16, 4]], "contributions": [0.75, 0.125], "image_size": 32}
    try:
        (plain, kept) = store.record(
            stream_name, [_row(1.0, 0.2), {**_row(1.0, 0.9, is_ood=True, thumbnail=b"png"), "explanation": data}], {}
        )
        assert store.explanation(kept[0]) == data and store.explanation(plain[0]) is None
        rows = store.images(stream_name)
        assert [r["has_explanation"] for r in rows] == [False, True]
    finally:
        store.close()


def test_concurrent_writers_get_dense_sequence_numbers(db_url: str, stream_name: str) -> None:
    """Two Store objects (as two processes would) appending to one stream: no gaps, no duplicates."""
    stores = [Store(db_url), Store(db_url)]
    errors: list[BaseException] = []

    def write(store: Store, tag: str) -> None:
        try:
            for i in range(15):
                store.record(stream_name, [_row(float(i), 0.1, source_id=f"{tag}{i}")] * 2, {"t": i})
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(s, tag)) for s, tag in zip(stores, "ab")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        seqs = [r["seq"] for r in stores[0].images(stream_name, limit=1000)]
        assert seqs == list(range(1, 61))
    finally:
        for s in stores:
            s.close()


def test_recorder_resumes_stream_state(db_url: str, stream_name: str, trained_detector, id_pngs, blank_png) -> None:
    """A second recorder on the same database continues the stream exactly where the first stopped."""
    cfg = DriftConfig(window_size=40, min_window=10, ert=500)
    first = StreamRecorder(trained_detector, Store(db_url), cfg, thumbnails="all")
    try:
        first.record(stream_name, [Item(f"id{i}", png) for i, png in enumerate(id_pngs[:30])])
        out = first.record(stream_name, [Item(f"blank{i}", blank_png) for i in range(20)] + [Item("junk", b"nope")])
        assert out["drift"]["is_drift"]
        assert out["results"][-1]["error"] == "junk: not a recognised image format"
        before = first.status(stream_name)
    finally:
        first.close()
    second = StreamRecorder(trained_detector, Store(db_url), cfg)
    try:
        after = second.status(stream_name)
        for key in ("time", "n_window", "n_flagged", "p_val", "distance", "is_drift", "per_test", "n_recorded"):
            assert after[key] == before[key], key
        out = second.record(stream_name, [Item("next", id_pngs[40])])
        assert out["results"][0]["seq"] == 52 and out["drift"]["time"] == 51
        assert second.store.images(stream_name, limit=1)[0]["source_id"] == "next"
        alerts = second.store.alerts(stream_name)
        assert [a["kind"] for a in alerts] == ["drift"]
        assert np.isfinite(alerts[0]["detail"]["score_threshold"])
    finally:
        second.close()


def test_unstorable_text_fails_only_its_image_on_every_database(
    db_url: str, stream_name: str, trained_detector, id_pngs
) -> None:
    """On PostgreSQL a 1,500-character or NUL-bearing source id failed the whole batch (SQLite kept it): every
    text field is now checked and normalised before the transaction, the same way on both."""
    rec = StreamRecorder(trained_detector, Store(db_url), thumbnails="all")
    try:
        items = [
            Item("x" * 1500, id_pngs[0]),
            Item("a\x00b.png", id_pngs[1]),
            Item("caf\udce9.png", id_pngs[2]),  # a non-UTF-8 file name as Python decodes it
            Item("ok.png", id_pngs[3]),
            Item("junk\x00.bin", b"not an image"),
            Item("x" * 1024, id_pngs[4]),  # exactly at the limit: kept
        ]
        out = rec.record(stream_name, items)
        res = out["results"]
        assert res[0]["error"] == "images[0]: source id of 1500 characters is longer than the 1024-character limit"
        assert res[1]["error"] == "images[1]: source id contains a NUL character"
        assert res[0]["score"] is None and res[1]["score"] is None and res[0]["source_id"] == "images[0]"
        assert res[2]["source_id"] == "caf\\xe9.png" and res[2]["score"] is not None
        assert res[3]["error"] is None and res[5]["error"] is None
        assert res[4]["error"] == "images[4]: source id contains a NUL character"
        rows = rec.store.images(stream_name)
        assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]  # every image has its row, errors included
        assert [r["source_id"] for r in rows] == [r["source_id"] for r in res]
        assert [r["error"] for r in rows] == [r["error"] for r in res]
        assert rows[2]["score"] == res[2]["score"] and not rows[0]["has_thumbnail"] and rows[3]["has_thumbnail"]
        assert rec.status(stream_name)["n_recorded"] == 6
    finally:
        rec.close()


def test_error_text_is_stored_alike_on_every_database(db_url: str, stream_name: str, trained_detector) -> None:
    rec = StreamRecorder(trained_detector, Store(db_url))
    try:
        long_error = Item("e", error="e: " + "y" * 5000 + "\x00\udcff")
        out = rec.record(stream_name, [long_error])
        (stored,) = rec.store.images(stream_name)
        assert stored["error"] == out["results"][0]["error"] and len(stored["error"]) == 2000
        assert "\x00" not in stored["error"]
    finally:
        rec.close()
