"""Listing many streams stays cheap: with 2,000 streams ``GET /v1/streams`` once took 3 s (several queries per
stream, every stream at once) and the dashboard asked for all of them every 2 s. The list is paged, each page one
query once the streams' monitors are loaded, and the dashboard asks for one page."""

from __future__ import annotations

from importlib.resources import files

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from discopatch.monitoring.service import create_app

N_STREAMS = 30


@pytest.fixture(scope="module")
def client(trained_detector, tmp_path_factory, blank_png):
    db = tmp_path_factory.mktemp("listing") / "m.db"
    with TestClient(create_app(trained_detector, f"sqlite:///{db}")) as c:
        store = c.app.state.recorder.store
        for i in range(N_STREAMS):  # rows written directly: the listing is what is under test, not scoring
            row = {"time": 1.0 + i, "source_id": "x", "score": 0.1, "p_value": 0.5, "is_ood": False, "error": None}
            store.record(f"s{i:03d}", [row], {})
        c.post("/v1/streams/s000/images", files=[("images", ("a.png", blank_png, "image/png"))])
        yield c


def test_stream_list_is_paged_with_a_next_link(client) -> None:
    first = client.get("/v1/streams", params={"limit": 12})
    assert first.status_code == 200 and [s["stream"] for s in first.json()] == [f"s{i:03d}" for i in range(12)]
    assert first.headers["link"] == '</v1/streams?limit=12&after=s011>; rel="next"'
    names, url = [], "/v1/streams?limit=12"
    while url:
        r = client.get(url)
        names += [s["stream"] for s in r.json()]
        link = r.headers.get("link")
        url = link[1 : link.index(">")] if link else None
    assert names == [f"s{i:03d}" for i in range(N_STREAMS)]
    everything = client.get("/v1/streams").json()  # the default page holds them all
    assert [s["stream"] for s in everything] == names and "link" not in client.get("/v1/streams").headers
    s0 = everything[0]
    assert s0["n_recorded"] == 2 and s0["n_alerts"] == 0 and s0["time"] >= 1
    assert client.get("/v1/streams", params={"limit": 0}).status_code == 422


def test_a_page_is_one_query_once_the_monitors_are_loaded(client) -> None:
    """Before: per stream its row, its alert count and a second look-up (3 queries each, 90 for 30 streams)."""
    engine = client.app.state.recorder.store.engine
    client.get("/v1/streams")  # loads every stream's monitor once
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert len(client.get("/v1/streams").json()) == N_STREAMS
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements


def test_dashboard_asks_for_one_page_and_shows_the_16_character_model_id() -> None:
    html = files("discopatch.monitoring").joinpath("dashboard.html").read_text(encoding="utf-8")
    assert 'fetch("/v1/streams?limit=" + MAX_CARDS' in html and 'getJSON("/v1/streams")' not in html
    assert "model.model_id.slice(0, 16)" in html
