"""A retry after a commit whose answer was lost must not store the images twice.

``POST /v1/streams/{name}/images`` takes an optional ``Idempotency-Key`` header. The key, a digest of the payload and
the response are committed with the images; a request with a key the stream already holds gets that response back
and records nothing, and the same key with other images is refused (422).
"""

from __future__ import annotations

import base64
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect

from discopatch.monitoring.drift import DriftConfig
from discopatch.monitoring.service import create_app
from discopatch.monitoring.store import AlertRow, AlreadyRecorded, ImageRow, Store, StoredRequest, StreamRow

CONFIG = DriftConfig(window_size=40, min_window=10, ert=500)
KEY = "3f1c2a9e-8d7b-4c61-9a0e-5b2f7d1e6c4a"


def _files(pngs: list[bytes], prefix: str = "img") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{prefix}{i}.png", b, "image/png")) for i, b in enumerate(pngs)]


def _state(client: TestClient, url: str) -> tuple:
    """What a duplicate would change: the stored rows and the drift state."""
    st = client.get(f"{url}/status").json()
    rows = client.get(f"{url}/images", params={"limit": 10_000}).json()
    return st["n_recorded"], st["time"], st["per_test"]["cusum"]["distance"], [(r["id"], r["seq"]) for r in rows]


def test_a_retry_with_the_same_key_stores_nothing_new(trained_detector, db_url, stream_name, id_pngs) -> None:
    url = f"/v1/streams/{stream_name}"
    with TestClient(create_app(trained_detector, db_url, drift_config=CONFIG)) as c:
        first = c.post(f"{url}/images", files=_files(id_pngs[:5]), headers={"Idempotency-Key": KEY})
        assert first.status_code == 200, first.text
        assert first.json()["replayed"] is False and "idempotent-replayed" not in first.headers
        before = _state(c, url)
        assert before[0] == 5
        as_json = {
            "images": [base64.b64encode(b).decode() for b in id_pngs[:5]],
            "source_ids": [f"img{i}.png" for i in range(5)],
        }
        for body in ({"files": _files(id_pngs[:5])}, {"json": as_json}):  # the client never saw the answer: retries
            retry = c.post(f"{url}/images", **body, headers={"Idempotency-Key": KEY})
            assert retry.status_code == 200, retry.text
            assert retry.headers["idempotent-replayed"] == "true"
            assert retry.json() == first.json() | {"replayed": True}
            assert _state(c, url) == before
        # a new key, and no key at all, record as before (without a key a resend is a new request)
        other = c.post(f"{url}/images", files=_files(id_pngs[:5]), headers={"Idempotency-Key": KEY + "-2"})
        assert [x["seq"] for x in other.json()["results"]] == [6, 7, 8, 9, 10]
        for start in (11, 16):
            plain = c.post(f"{url}/images", files=_files(id_pngs[:5]))
            assert plain.status_code == 200 and plain.json()["replayed"] is False
            assert [x["seq"] for x in plain.json()["results"]] == list(range(start, start + 5))
        assert _state(c, url)[:2] == (20, 20)


def test_the_same_key_with_other_images_is_refused(trained_detector, db_url, stream_name, id_pngs) -> None:
    url = f"/v1/streams/{stream_name}"
    with TestClient(create_app(trained_detector, db_url, drift_config=CONFIG)) as c:
        assert c.post(f"{url}/images", files=_files(id_pngs[:3]), headers={"Idempotency-Key": KEY}).status_code == 200
        before = _state(c, url)
        for files in (_files(id_pngs[1:4]), _files(id_pngs[:3], prefix="renamed"), _files(id_pngs[:2])):
            r = c.post(f"{url}/images", files=files, headers={"Idempotency-Key": KEY})
            assert r.status_code == 422, r.text
            assert "already used in this stream for a different payload" in r.json()["detail"]
        assert _state(c, url) == before
        # keys belong to a stream: the same key in another stream is a new request
        r = c.post(f"/v1/streams/{stream_name}-b/images", files=_files(id_pngs[1:4]), headers={"Idempotency-Key": KEY})
        assert r.status_code == 200 and r.json()["replayed"] is False


def test_the_key_survives_a_restart(trained_detector, db_url, stream_name, id_pngs) -> None:
    url = f"/v1/streams/{stream_name}"
    with TestClient(create_app(trained_detector, db_url, drift_config=CONFIG)) as c:
        first = c.post(f"{url}/images", files=_files(id_pngs[:4]), headers={"Idempotency-Key": KEY})
        assert first.status_code == 200, first.text
        before = _state(c, url)
    with TestClient(create_app(trained_detector, db_url, drift_config=CONFIG)) as c:  # a new server, same database
        retry = c.post(f"{url}/images", files=_files(id_pngs[:4]), headers={"Idempotency-Key": KEY})
        assert retry.status_code == 200 and retry.json() == first.json() | {"replayed": True}
        assert _state(c, url) == before


def test_invalid_keys_are_refused(trained_detector, tmp_path, id_pngs) -> None:
    with TestClient(create_app(trained_detector, f"sqlite:///{tmp_path / 'm.db'}", drift_config=CONFIG)) as c:
        for bad in (b"", b" x", b"x ", b"x" * 256, "cl\xe9".encode("latin-1"), b"a\tb"):
            r = c.post("/v1/streams/s/images", files=_files(id_pngs[:1]), headers={"Idempotency-Key": bad})
            assert r.status_code == 400, bad
            assert "invalid idempotency key" in r.json()["detail"]
        assert c.get("/v1/streams").json() == []
        ok = c.post("/v1/streams/s/images", files=_files(id_pngs[:1]), headers={"Idempotency-Key": "k " + "x" * 253})
        assert ok.status_code == 200, ok.text


def test_concurrent_retries_record_once(trained_detector, live_server, tmp_path, id_pngs) -> None:
    """Four copies of one request at once (a client retrying before the first answer): one set of rows."""
    app = create_app(trained_detector, f"sqlite:///{tmp_path / 'm.db'}", drift_config=CONFIG)
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(4)
    with live_server(app) as base:

        def send() -> None:
            with httpx.Client(base_url=base, timeout=120) as cl:
                barrier.wait()
                answers.append(
                    cl.post("/v1/streams/s/images", files=_files(id_pngs[:6]), headers={"Idempotency-Key": KEY})
                )

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = httpx.get(f"{base}/v1/streams/s/images").json()
    assert [r.status_code for r in answers] == [200] * 4
    assert sorted(r.json()["replayed"] for r in answers) == [False, True, True, True]
    assert {tuple(x["id"] for x in r.json()["results"]) for r in answers} == {tuple(r["id"] for r in rows)}
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_the_store_checks_the_key_in_the_write_transaction(db_url: str, stream_name: str) -> None:
    """A writer that did not see the key before writing (another process got in first) writes nothing."""
    store = Store(db_url)
    try:
        row = {"time": 1.0, "source_id": "x", "score": 0.1, "p_value": 0.5, "is_ood": False, "error": None}
        body = {"stream": stream_name, "results": [{"index": 0}], "drift": {"time": 1}}
        ids = store.record(stream_name, [row], {"t": 1}, request=StoredRequest(KEY, "f" * 64, body))
        with pytest.raises(AlreadyRecorded) as e:
            store.record(stream_name, [row], {"t": "dup"}, request=StoredRequest(KEY, "f" * 64, {}))
        assert e.value.request.image_ids == ids and e.value.request.response == body
        assert e.value.request.fingerprint == "f" * 64 and e.value.request.created is not None
        state, window, n = store.load_stream_version(stream_name, 10, None)
        assert (state, len(window), n) == ({"t": 1}, 1, 1)
        assert store.request(stream_name, KEY) == e.value.request
        assert store.request(stream_name, "other") is None and store.request("no-" + stream_name, KEY) is None
    finally:
        store.close()


def test_opening_an_older_database_adds_the_table(tmp_path, trained_detector, id_pngs) -> None:
    """``create_all`` adds ``dp_requests`` to a database made before it existed; the old rows stay."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    StreamRow.metadata.create_all(engine, tables=[StreamRow.__table__, ImageRow.__table__, AlertRow.__table__])
    with engine.begin() as conn:
        conn.execute(StreamRow.__table__.insert().values(name="s", created=0.0, updated=0.0, n_images=0, state={}))
    assert "dp_requests" not in inspect(engine).get_table_names()
    engine.dispose()
    with TestClient(create_app(trained_detector, url, drift_config=CONFIG)) as c:
        for replayed in (False, True):
            r = c.post("/v1/streams/s/images", files=_files(id_pngs[:2]), headers={"Idempotency-Key": KEY})
            assert r.status_code == 200 and r.json()["replayed"] is replayed
        assert c.get("/v1/streams/s/status").json()["n_recorded"] == 2
