"""Server limits, timeout, bearer token, stream-name allow-list, loopback default and a CDN-free API page."""

from __future__ import annotations

import base64
import sqlite3
import threading

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from discopatch.cli import build_parser
from discopatch.monitoring.service import create_app

from .corpus import good_images

PNG = good_images(1)[0].data


def _client(det, tmp_path, **kw) -> TestClient:
    return TestClient(create_app(det, f"sqlite:///{tmp_path / 'm.db'}", **kw))


def _files(n: int) -> list:
    return [("images", (f"{i}.png", PNG, "image/png")) for i in range(n)]


def test_body_and_image_count_limits(trained_detector, tmp_path) -> None:
    with _client(trained_detector, tmp_path, max_body_bytes=4096, max_images=3) as c:
        r = c.post("/v1/score", files=_files(40))
        assert r.status_code == 413 and "4096-byte limit" in r.json()["detail"]
        r = c.post("/v1/score", files=_files(4))
        assert r.status_code == 413 and "limit is 3" in r.json()["detail"]
        # no Content-Length (chunked): the body is counted as it arrives and cut off at the limit
        chunks = (b'{"images": ["' + b"A" * 1000 for _ in range(10))
        r = c.post("/v1/score", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "4096-byte limit" in r.json()["detail"]
        assert c.post("/v1/score", files=_files(3)).status_code == 200  # within limits: fine


def test_scoring_timeout_answers_503_and_records_nothing(trained_detector, tmp_path) -> None:
    release = threading.Event()
    with _client(trained_detector, tmp_path, timeout_s=0.2) as c:
        scorer = c.app.state.recorder.scorer
        real = scorer.score

        def stuck(items, cancel=None):
            release.wait(30)  # held until the test has seen the 503
            return real(items)

        scorer.score = stuck
        try:
            r = c.post("/v1/score", files=_files(1))
            assert r.status_code == 503 and "request timeout" in r.json()["detail"]
            r = c.post("/v1/streams/cam/images", files=_files(1))
            assert r.status_code == 503
        finally:
            release.set()
            scorer.score = real
        assert c.get("/v1/streams/cam/status").status_code == 404  # nothing was recorded
        assert c.post("/v1/score", files=_files(1)).status_code == 200


def test_bearer_token_guards_writes(trained_detector, tmp_path) -> None:
    with _client(trained_detector, tmp_path, token="s3cret") as c:
        r = c.post("/v1/score", files=_files(1))
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        wrong = {"authorization": "Bearer nope"}
        assert c.post("/v1/streams/a/images", files=_files(1), headers=wrong).status_code == 401
        ok = {"authorization": "Bearer s3cret"}
        assert c.post("/v1/score", files=_files(1), headers=ok).status_code == 200
        assert c.post("/v1/streams/a/images", files=_files(1), headers=ok).status_code == 200
        assert c.get("/v1/streams/a/status").status_code == 200  # reads stay open
        assert c.get("/metrics").status_code == 200


def test_token_guards_thumbnails(trained_detector, tmp_path) -> None:
    """With ``--token`` alone a flagged image's thumbnail (sequential ids: enumerable) was open."""
    ok = {"authorization": "Bearer s3cret"}
    with _client(trained_detector, tmp_path, token="s3cret", thumbnails="all") as c:
        r = c.post("/v1/streams/cam/images", files=_files(1), headers=ok)
        assert r.status_code == 200, r.text
        image_id = r.json()["results"][0]["id"]
        listed = c.get("/v1/streams/cam/images").json()
        assert listed[0]["thumbnail"] == f"/v1/images/{image_id}/thumbnail.png"
        for missing in (None, "Bearer nope"):
            headers = {"authorization": missing} if missing else {}
            r = c.get(f"/v1/images/{image_id}/thumbnail.png", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = c.get(f"/v1/images/{image_id}/thumbnail.png", headers=ok)
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")


def test_token_all_guards_reads_but_not_healthz(trained_detector, tmp_path) -> None:
    with _client(trained_detector, tmp_path, token="s3cret", token_all=True) as c:
        assert c.get("/v1/streams").status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/streams", headers={"authorization": "Bearer s3cret"}).status_code == 200


HOSTILE_NAMES = [
    "x'; DROP TABLE dp_streams;--",
    'a" OR 1=1 --',
    "...",
    ".hidden",
    "-rf",
    "a" * 200,
    "name with space",
    "ünïcode",
    "semi;colon",
]


def test_hostile_stream_names_are_refused_and_the_db_is_untouched(trained_detector, tmp_path) -> None:
    with _client(trained_detector, tmp_path) as c:
        assert c.post("/v1/streams/good/images", files=_files(1)).status_code == 200
        for name in HOSTILE_NAMES:
            r = c.post(f"/v1/streams/{name}/images", files=_files(1))
            assert r.status_code == 400, (name, r.status_code)
            assert "invalid stream name" in r.json()["detail"]
            assert c.get(f"/v1/streams/{name}/status").status_code == 400
        for path in ("..", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e"):  # clients normalise some
            r = c.post(f"/v1/streams/{path}/images", files=_files(1))
            assert r.status_code in (400, 404, 405), (path, r.status_code)
        assert [s["stream"] for s in c.get("/v1/streams").json()] == ["good"]
    con = sqlite3.connect(tmp_path / "m.db")
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"dp_streams", "dp_images", "dp_alerts"} <= tables
        assert con.execute("SELECT name FROM dp_streams").fetchall() == [("good",)]
        assert con.execute("SELECT count(*) FROM dp_images").fetchone() == (1,)
    finally:
        con.close()
    assert not (tmp_path / "etc").exists()


def test_api_page_is_local_and_openapi_stays(trained_detector, tmp_path) -> None:
    with _client(trained_detector, tmp_path) as c:
        page = c.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower() and "https://" not in page.text and "/openapi.json" in page.text
        assert c.get("/redoc").status_code == 404
        assert "/v1/score" in c.get("/openapi.json").json()["paths"]


def test_serve_defaults(monkeypatch) -> None:
    monkeypatch.delenv("DISCOPATCH_TOKEN", raising=False)
    args = build_parser().parse_args(["serve", "model"])
    assert args.host == "127.0.0.1" and args.token is None and not args.token_all
    assert args.max_body_bytes == 64 * 1024 * 1024 and args.timeout == 120.0 and args.max_images == 256
    monkeypatch.setenv("DISCOPATCH_TOKEN", "from-env")
    assert build_parser().parse_args(["serve", "model"]).token == "from-env"


def test_token_all_without_token_is_a_usage_error(model_dir, monkeypatch, capsys) -> None:
    from discopatch.cli import main

    monkeypatch.delenv("DISCOPATCH_TOKEN", raising=False)
    assert main(["serve", str(model_dir), "--token-all"]) == 2
    assert "--token-all needs a token" in capsys.readouterr().err


# ----------------------------------------------------------------------------- smaller request and response edges
def test_stream_name_with_a_trailing_newline_is_refused(trained_detector, tmp_path) -> None:
    """``^...$`` matched before a final newline: ``abc%0A`` created a stream named ``"abc\\n"``."""
    with _client(trained_detector, tmp_path) as c:
        for name in ("abc%0A", "abc%0D%0A", "abc%0A%0A"):
            r = c.post(f"/v1/streams/{name}/images", files=_files(1))
            assert r.status_code == 400 and "invalid stream name" in r.json()["detail"], name
        assert c.get("/v1/streams").json() == []


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's recursion limit
        b'{"images": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"images": ["AAAA"], "source_ids": [' + b"9" * 5000 + b"]}",  # past Python's int-digit limit
    ],
    ids=["nested", "nested-images", "huge-int"],
)
def test_hostile_json_is_a_4xx_and_the_server_keeps_serving(trained_detector, tmp_path, body: bytes) -> None:
    with _client(trained_detector, tmp_path) as c:
        r = c.post("/v1/streams/cam/images", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and r.json()["detail"], r.status_code
        assert c.post("/v1/streams/cam/images", files=_files(1)).status_code == 200


def test_huge_integers_in_urls_and_ids_are_4xx_or_per_image(trained_detector, tmp_path) -> None:
    big = 10**30
    with _client(trained_detector, tmp_path) as c:
        assert c.post("/v1/streams/cam/images", files=_files(1)).status_code == 200
        assert c.get(f"/v1/images/{big}/thumbnail.png").status_code in (404, 422)
        assert c.get(f"/v1/streams/cam/images?after_seq={big}").status_code in (200, 422)
        assert c.get(f"/v1/streams/cam/images?after_seq=-{big}").status_code in (200, 422)
        r = c.post("/v1/streams/cam/images", json={"images": [base64.b64encode(PNG).decode()], "source_ids": [big]})
        assert r.status_code in (200, 422)
        if r.status_code == 200:
            assert r.json()["results"][0]["error"] is None


def test_empty_multipart_file_name_gets_an_accurate_message(trained_detector, tmp_path) -> None:
    """httpx (and other clients) drop an empty ``filename``; the part then arrives as a text field. The documented
    body holds files only (a text part is outside the schema), so the request is a 422."""
    with _client(trained_detector, tmp_path) as c:
        r = c.post("/v1/score", files=[("images", ("ok.png", PNG, "image/png")), ("images", ("", PNG, "image/png"))])
        assert r.status_code == 422
        assert r.json()["detail"].startswith("images[1]: this 'images' part has no filename")


def test_token_all_hides_the_database_location(trained_detector, tmp_path) -> None:
    with _client(trained_detector, tmp_path, token="s3cret", token_all=True) as c:
        r = c.get("/healthz")
        assert r.status_code == 200 and str(tmp_path) not in r.text and "m.db" not in r.text
    with _client(trained_detector, tmp_path) as c:  # reads are open anyway: the location stays visible
        assert str(tmp_path / "m.db") in c.get("/healthz").json()["db"]


def test_too_long_file_name_fails_only_its_image(trained_detector, tmp_path) -> None:
    with _client(trained_detector, tmp_path) as c:
        files = [("images", ("n" * 1500 + ".png", PNG, "image/png")), ("images", ("ok.png", PNG, "image/png"))]
        r = c.post("/v1/streams/cam/images", files=files)
        assert r.status_code == 200
        bad, good = r.json()["results"]
        assert "longer than the 1024-character limit" in bad["error"] and bad["seq"] == 1
        assert good["error"] is None and good["source_id"] == "ok.png" and good["seq"] == 2
        rows = c.get("/v1/streams/cam/images").json()
        assert [row["source_id"] for row in rows] == ["images[0]", "ok.png"]


# ------------------------------------------------------------------------------- failed writes are visible
def test_failed_write_is_logged_and_reported_by_healthz(trained_detector, tmp_path, caplog) -> None:
    """A database that still answers reads but refuses writes gave 503s while /healthz said ok and nothing was
    logged. The table is dropped behind the server's back: a real write failure, reads unaffected."""
    with _client(trained_detector, tmp_path) as c:
        assert c.post("/v1/streams/cam/images", files=_files(1)).status_code == 200
        con = sqlite3.connect(tmp_path / "m.db")
        con.execute("DROP TABLE dp_images")
        con.commit()
        with caplog.at_level("ERROR", logger="discopatch.monitoring"):
            r = c.post("/v1/streams/cam/images", files=_files(2))
        assert r.status_code == 503
        (record,) = [x for x in caplog.records if x.levelname == "ERROR"]
        assert "could not record 2 images in stream cam" in record.getMessage()
        assert "no such table: dp_images" in record.getMessage()  # the cause, not just the exception class
        health = c.get("/healthz")
        assert health.status_code == 503 and "no such table: dp_images" in health.json()["detail"]
        con.close()
        from discopatch.monitoring.store import Base

        Base.metadata.create_all(c.app.state.recorder.store.engine)  # the operator repairs the database
        assert c.post("/v1/streams/cam/images", files=_files(1)).status_code == 200
        assert c.get("/healthz").status_code == 200  # healthy again after a successful write


@pytest.mark.parametrize("command", ["serve", "monitor"])
def test_unusable_database_is_one_clear_line_at_startup(model_dir, tmp_path, capsys, command) -> None:
    from discopatch.cli import main

    db = tmp_path / "no-such-dir" / "m.db"
    extra = ["--stream", "cam", "--watch", str(tmp_path), "--once"] if command == "monitor" else []
    assert main([command, str(model_dir), "--db", str(db), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert f"database sqlite:///{db} is not usable" in err and "unable to open database file" in err


# ---------------------------------------------------------------------------------------- strict parsing
def _multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, data in parts:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'.encode()
        out += b"Content-Type: image/png\r\n\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("cut", ["inside-last-part", "no-closing-boundary"])
def test_cut_multipart_body_is_refused(trained_detector, tmp_path, cut) -> None:
    """The last part cut off in transit, or a body without its closing boundary, was accepted (200) and the cut
    part silently dropped."""
    whole = _multipart([("a.png", PNG), ("b.png", PNG)])
    body = whole[: len(whole) - 60] if cut == "inside-last-part" else whole[: whole.rindex(b"--b0undary--")]
    headers = {"content-type": "multipart/form-data; boundary=b0undary"}
    with _client(trained_detector, tmp_path) as c:
        for path in ("/v1/score", "/v1/streams/cam/images"):
            r = c.post(path, content=body, headers=headers)
            assert r.status_code == 400 and "closing boundary" in r.json()["detail"], (path, r.text)
        assert c.get("/v1/streams/cam/status").status_code == 404  # nothing recorded
        r = c.post("/v1/score", content=whole, headers=headers)
        assert r.status_code == 200 and r.json()["n_images"] == 2 and r.json()["n_errors"] == 0


def test_json_body_of_many_tiny_elements_is_refused_before_parsing(trained_detector, tmp_path) -> None:
    """64 MB of ``{}`` raised server memory by 1.7 GB: elements are counted on the raw bytes first, against a
    limit proportionate to the image limit."""
    image = base64.b64encode(PNG).decode()
    padding = b"[" + b",".join([b"{}"] * 200_000) + b"]"
    body = b'{"images": ["' + image.encode() + b'"], "padding": ' + padding + b"}"
    with _client(trained_detector, tmp_path, max_images=8) as c:
        r = c.post("/v1/score", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "elements" in r.json()["detail"], r.text
        # a request at the image limit, each image an object with its id plus a source_ids list, is fine
        entries = [{"data": image, "source_id": f"i{i}"} for i in range(8)]
        r = c.post("/v1/score", json={"images": entries, "source_ids": [f"s{i}" for i in range(8)]})
        assert r.status_code == 200 and r.json()["n_errors"] == 0
        # brackets, commas and colons inside strings are text, not elements
        r = c.post("/v1/score", json={"images": [image], "source_ids": ["[,:{" * 250]})
        assert r.status_code == 200


def test_json_body_is_parsed_off_the_event_loop(trained_detector, tmp_path, monkeypatch) -> None:
    """Parsing ran on the event loop: a 64 MB body stalled /livez for 2.5 s. The spy records whether the thread
    that parses the request body runs the event loop."""
    import asyncio
    import json

    image = base64.b64encode(PNG).decode()
    body = json.dumps({"images": [image], "source_ids": ["marker-7f3a"]}).encode()
    on_loop: list[bool] = []
    real = json.loads

    def spy(s, *args, **kwargs):
        if isinstance(s, (bytes, bytearray)) and b"marker-7f3a" in s:
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                on_loop.append(False)
        return real(s, *args, **kwargs)

    monkeypatch.setattr(json, "loads", spy)
    with _client(trained_detector, tmp_path) as c:
        r = c.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["results"][0]["source_id"] == "marker-7f3a"
    assert on_loop and True not in on_loop  # the server's parse (and the client's, of the response)


# ----------------------------------------------------------------------------------- the bearer scheme
@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(trained_detector, tmp_path, scheme) -> None:
    """RFC 7235: the auth scheme is case-insensitive; ``Authorization: bearer <token>`` was refused (401)."""
    with _client(trained_detector, tmp_path, token="s3cret") as c:
        assert c.post("/v1/score", files=_files(1), headers={"authorization": f"{scheme} s3cret"}).status_code == 200
        assert c.post("/v1/score", files=_files(1), headers={"authorization": f"{scheme} s3crex"}).status_code == 401
        assert c.post("/v1/score", files=_files(1), headers={"authorization": "Basic s3cret"}).status_code == 401
        assert c.post("/v1/score", files=_files(1), headers={"authorization": "s3cret"}).status_code == 401
