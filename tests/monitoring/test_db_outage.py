"""Health that recovers and failures that show.

The outage is real: the SQLite file's folder is moved away (every new connection fails, reads and writes alike)
and moved back, or SQLite's own ``query_only`` switch makes it refuse writes while reads still work."""

from __future__ import annotations

import base64
import logging
import os
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from discopatch.monitoring.service import create_app
from discopatch.monitoring.store import Store, StoreUnavailable

parser = pytest.importorskip("prometheus_client.parser")


def _files(png: bytes, n: int = 1) -> list:
    return [("images", (f"{i}.png", png, "image/png")) for i in range(n)]


def _failures(client: TestClient) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").text
    fams = {f.name: f for f in parser.text_string_to_metric_families(text)}
    return {
        (s.labels["operation"], s.labels["reason"]): s.value
        for s in fams["discopatch_database_failures"].samples
        if s.name.endswith("_total")
    }


def _database_up(client: TestClient) -> float:
    fams = {f.name: f for f in parser.text_string_to_metric_families(client.get("/metrics").text)}
    return fams["discopatch_database_up"].samples[0].value


def _read_only(store: Store, on: bool) -> None:
    """The database refuses every write on connections made from now on (SQLite's ``PRAGMA query_only``,
    PostgreSQL's read-only transactions), or stops refusing."""

    def read_only(dbapi_conn, _record) -> None:
        if store.engine.dialect.name == "sqlite":
            dbapi_conn.execute("PRAGMA query_only=ON")
        else:
            with dbapi_conn.cursor() as cur:
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            dbapi_conn.commit()

    if on:
        event.listen(store.engine, "connect", read_only)
        store._read_only = read_only  # type: ignore[attr-defined]
    else:
        event.remove(store.engine, "connect", store._read_only)  # type: ignore[attr-defined]
    store.engine.dispose()  # pooled connections are replaced by ones with the new setting


def test_readiness_recovers_without_waiting_for_a_write(trained_detector, db_url, stream_name, blank_png) -> None:
    """After a failed write /readyz stayed 503 until a write succeeded: with readiness gating traffic, none came."""
    url = f"/v1/streams/{stream_name}"
    with TestClient(create_app(trained_detector, db_url)) as c:
        assert c.post(f"{url}/images", files=_files(blank_png)).status_code == 200
        store = c.app.state.recorder.store
        _read_only(store, True)
        r = c.post(f"{url}/images", files=_files(blank_png))
        assert r.status_code == 503
        ready = c.get("/readyz")
        assert ready.status_code == 503 and re.search(r"read.?only", ready.json()["checks"]["database"]), ready.text
        assert c.get("/readyz").status_code == 503  # the probe itself writes (and rolls back): still refused
        _read_only(store, False)  # the operator fixes the database; no write is sent
        assert c.get("/readyz").status_code == 200 and c.get("/healthz").status_code == 200
        assert len(c.get(f"{url}/images").json()) == 1  # the probe left nothing behind
        names = [s["stream"] for s in c.get("/v1/streams", params={"limit": 10_000}).json()]
        assert stream_name in names and not any("probe" in n for n in names)


def test_an_outage_answers_503_keeps_metrics_and_counts_and_logs_every_failed_write(
    trained_detector, tmp_path, blank_png, caplog
) -> None:
    """During an outage /metrics and stream GETs answered 500 with a traceback, and failed writes with an
    Idempotency-Key or on a stream's first write left no log line and no unhealthy status."""
    folder = tmp_path / "db"
    folder.mkdir()
    payload = {"images": [base64.b64encode(blank_png).decode()]}
    with TestClient(create_app(trained_detector, f"sqlite:///{folder / 'm.db'}")) as c:
        assert c.post("/v1/streams/cam/images", files=_files(blank_png)).status_code == 200
        before = _failures(c)
        os.rename(folder, tmp_path / "away")
        c.app.state.recorder.store.engine.dispose()  # every connection from now on fails to open
        with caplog.at_level(logging.ERROR, logger="discopatch.monitoring"):
            first = c.post("/v1/streams/fresh/images", files=_files(blank_png))  # the stream's first write
            keyed = c.post("/v1/streams/cam/images", json=payload, headers={"idempotency-key": "k-1"})
            for path in (
                "/v1/streams",
                "/v1/streams/cam/status",
                "/v1/streams/cam/images",
                "/v1/images/1/thumbnail.png",
            ):
                r = c.get(path)
                assert r.status_code == 503 and "database is unavailable" in r.json()["detail"], (path, r.text)
            metrics = c.get("/metrics")
            assert metrics.status_code == 200 and _database_up(c) == 0
            assert c.get("/readyz").status_code == 503 and c.get("/healthz").status_code == 503
            assert c.get("/livez").status_code == 200
        assert first.status_code == 503 and keyed.status_code == 503
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any("stream fresh" in m and "unable to open database file" in m for m in errors), errors
        assert any("stream cam" in m and "unable to open database file" in m for m in errors), errors
        after = _failures(c)
        assert after[("write", "OperationalError")] - before.get(("write", "OperationalError"), 0) == 2
        assert after[("read", "OperationalError")] >= 4
        os.rename(tmp_path / "away", folder)  # the database is back: health follows without any write
        assert c.get("/readyz").status_code == 200 and _database_up(c) == 1
        assert c.post("/v1/streams/fresh/images", files=_files(blank_png)).status_code == 200


def test_failed_writes_are_logged_rate_limited_but_all_counted(trained_detector, tmp_path, blank_png, caplog) -> None:
    with TestClient(create_app(trained_detector, f"sqlite:///{tmp_path / 'm.db'}")) as c:
        assert c.post("/v1/streams/cam/images", files=_files(blank_png)).status_code == 200
        _read_only(c.app.state.recorder.store, True)
        with caplog.at_level(logging.ERROR, logger="discopatch.monitoring"):
            codes = [c.post("/v1/streams/cam/images", files=_files(blank_png)).status_code for _ in range(12)]
        assert codes == [503] * 12
        lines = [r.getMessage() for r in caplog.records if "stream cam" in r.getMessage()]
        assert 1 <= len(lines) <= 2, lines  # one line per 10 s per stream and reason
        assert "could not record 1 images in stream cam: OperationalError: attempt to write a readonly" in lines[0]
        assert _failures(c)[("write", "OperationalError")] == 12


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?uri=true"])
def test_in_memory_sqlite_is_refused(url) -> None:
    """Each connection of an in-memory SQLite database is a database of its own: the server started healthy and
    every write returned 503."""
    with pytest.raises(StoreUnavailable, match="in-memory SQLite database cannot hold the history"):
        Store(url)


def test_serve_refuses_in_memory_sqlite_with_one_line(model_dir, capsys, monkeypatch) -> None:
    import uvicorn

    from discopatch.cli import main

    def started(*_args, **_kwargs):
        raise AssertionError("the server started on an in-memory database")

    monkeypatch.setattr(uvicorn, "run", started)
    monkeypatch.delenv("DISCOPATCH_TOKEN", raising=False)
    assert main(["serve", str(model_dir), "--db", "sqlite:///:memory:"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "in-memory SQLite database" in err and "Traceback" not in err
