"""The HTTP API through a real uvicorn server on 127.0.0.1, driven with httpx."""

from __future__ import annotations

import base64
import io
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from discopatch.monitoring.drift import DriftConfig
from discopatch.monitoring.service import create_app


@pytest.fixture(scope="module")
def server(model_dir, live_server, tmp_path_factory):
    """The saved tiny detector (so it has a model id) behind a live server."""
    db = tmp_path_factory.mktemp("api") / "monitor.db"
    app = create_app(model_dir, f"sqlite:///{db}", drift_config=DriftConfig(window_size=60, min_window=20))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def _files(pngs: list[bytes], prefix: str = "img") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{prefix}{i}.png", b, "image/png")) for i, b in enumerate(pngs)]


def test_multipart_scores_equal_the_library(server, trained_detector, id_pngs) -> None:
    pngs = id_pngs[:6]
    r = server.post("/v1/score", files=_files(pngs))
    assert r.status_code == 200, r.text
    body = r.json()
    lib = trained_detector.predict(pngs)
    assert body["n_images"] == 6 and body["n_errors"] == 0
    assert [x["source_id"] for x in body["results"]] == [f"img{i}.png" for i in range(6)]
    np.testing.assert_allclose([x["score"] for x in body["results"]], lib["scores"], rtol=1e-9, atol=0)
    assert [x["p_value"] for x in body["results"]] == pytest.approx(lib["p_values"].tolist())
    assert [x["is_ood"] for x in body["results"]] == lib["is_ood"].tolist()
    assert body["threshold"] == trained_detector.threshold
    # Each image's score does not depend on what it was sent with.
    alone = server.post("/v1/score", files=_files(pngs[3:4])).json()["results"][0]["score"]
    assert alone == body["results"][3]["score"]


def test_base64_json_matches_multipart(server, id_pngs) -> None:
    pngs = id_pngs[10:14]
    multi = server.post("/v1/score", files=_files(pngs)).json()
    images = [base64.b64encode(b).decode() for b in pngs]
    images[1] = "data:image/png;base64," + images[1]
    r = server.post("/v1/score", json={"images": images, "source_ids": ["a", "b", "c", "d"]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["score"] for x in res] == [x["score"] for x in multi["results"]]
    assert [x["source_id"] for x in res] == ["a", "b", "c", "d"]
    obj = server.post("/v1/score", json={"images": [{"data": images[0], "source_id": "cam-7/0001"}]}).json()
    assert obj["results"][0]["source_id"] == "cam-7/0001" and obj["results"][0]["score"] == res[0]["score"]


def test_bad_images_get_specific_errors_and_the_rest_are_scored(server, trained_detector, id_pngs) -> None:
    good = id_pngs[20:22]
    truncated = id_pngs[22][: len(id_pngs[22]) // 2]
    r = server.post(
        "/v1/score",
        files=[*_files(good[:1]), ("images", ("junk.png", b"definitely not an image", "image/png")),
               ("images", ("cut.png", truncated, "image/png")), ("images", ("empty.png", b"", "image/png")),
               *_files(good[1:], prefix="late")],
    )  # fmt: skip
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert r.json()["n_errors"] == 3
    assert res[1]["error"] == "junk.png: not a recognised image format" and res[1]["score"] is None
    assert res[2]["error"].startswith("cut.png: corrupt or truncated image")
    assert res[3]["error"] == "empty.png: empty input (0 bytes)"
    lib = trained_detector.score(good)
    assert [res[0]["score"], res[4]["score"]] == pytest.approx(lib.tolist(), rel=1e-9)
    r = server.post("/v1/score", json={"images": [base64.b64encode(good[0]).decode(), "%%%not base64%%%"]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert res[0]["error"] is None
    assert res[1]["error"].startswith("images[1]: not valid base64")
    # a number is not an image that failed but a body outside the documented schema
    r = server.post("/v1/score", json={"images": [base64.b64encode(good[0]).decode(), 42]})
    assert r.status_code == 422 and r.json()["detail"] == (
        'images[1] is int: expected a base64 string or {"data": "<base64>"}'
    )


def test_request_level_errors(server) -> None:
    assert server.post("/v1/score", json={"images": []}).status_code == 422
    assert server.post("/v1/score", json=["not", "an", "object"]).status_code == 422
    assert server.post("/v1/score", content=b"{", headers={"content-type": "application/json"}).status_code == 400
    assert server.post("/v1/score", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert server.post("/v1/score", json={"images": ["AA=="] * 257}).status_code == 413
    assert server.post("/v1/streams/bad name!/images", json={"images": ["AA=="]}).status_code == 400
    assert server.get("/v1/streams/never-seen/status").status_code == 404
    assert server.get("/v1/streams/never-seen/alerts").status_code == 404
    assert server.get("/v1/images/999999/thumbnail.png").status_code == 404


def test_stream_records_and_reports_drift(server, trained_detector, id_pngs, blank_png) -> None:
    for start in range(0, 40, 8):
        r = server.post("/v1/streams/line-1/images", files=_files(id_pngs[start : start + 8], prefix=f"id{start}-"))
        assert r.status_code == 200, r.text
        assert not r.json()["drift"]["is_drift"]
    flagged_before = sum(x["is_ood"] for x in server.get("/v1/streams/line-1/images").json())
    transitions = []
    for start in range(0, 40, 8):
        r = server.post("/v1/streams/line-1/images", files=_files([blank_png] * 8, prefix=f"blank{start}-"))
        assert r.status_code == 200, r.text
        transitions.append(r.json()["drift"]["transition"])
    body = r.json()
    assert body["stream"] == "line-1" and [x["seq"] for x in body["results"]] == list(range(73, 81))
    assert body["drift"]["is_drift"] and "ks" in body["drift"]["drifting_tests"]
    assert transitions.count("drift") == 1
    status = server.get("/v1/streams/line-1/status").json()
    assert status["is_drift"] and status["n_recorded"] == 80 and status["time"] == 80 and status["n_alerts"] == 1
    assert {"is_drift", "p_val", "threshold", "distance", "time", "n_window", "n_flagged", "alarm_rate"} <= set(status)
    alerts = server.get("/v1/streams/line-1/alerts").json()
    # Which test trips first (KS on the score distribution, or CUSUM on the flag rate) depends on the model.
    assert len(alerts) == 1 and alerts[0]["kind"] == "drift" and set(alerts[0]["tests"]) & {"ks", "cusum"}
    listed = {s["stream"]: s for s in server.get("/v1/streams").json()}
    assert listed["line-1"]["is_drift"]
    rows = server.get("/v1/streams/line-1/images", params={"limit": 5}).json()
    assert [x["seq"] for x in rows] == [76, 77, 78, 79, 80] and rows[0]["source_id"].startswith("blank")
    flagged = server.get("/v1/streams/line-1/images", params={"flagged": True}).json()
    assert len(flagged) == flagged_before
    for row in flagged:  # thumbnails are kept for flagged images
        png = server.get(row["thumbnail"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (32, 32)


def test_metrics_are_prometheus_text(server, id_pngs) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    server.post("/v1/streams/metrics-1/images", files=_files(id_pngs[:3]))
    r = server.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in parser.text_string_to_metric_families(r.text)}
    assert families["discopatch_http_requests"].type == "counter"
    routes = {s.labels["route"] for s in families["discopatch_http_requests"].samples}
    assert "/v1/streams/{name}/images" in routes
    assert families["discopatch_http_request_duration_seconds"].type == "histogram"
    images = {s.labels["outcome"]: s.value for s in families["discopatch_images"].samples}
    assert images["id"] + images["ood"] >= 3
    window = {s.labels["stream"]: s.value for s in families["discopatch_stream_window_images"].samples}
    assert window["metrics-1"] == 3
    assert "metrics-1" in {s.labels["stream"] for s in families["discopatch_stream_cusum_threshold"].samples}


def test_openapi_health_and_dashboard(server) -> None:
    spec = server.get("/openapi.json").json()
    for path in ("/v1/score", "/v1/streams/{name}/images", "/v1/streams/{name}/status", "/v1/streams/{name}/alerts",
                 "/healthz", "/metrics", "/dashboard"):  # fmt: skip
        assert path in spec["paths"], path
    content = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)
    health = server.get("/healthz").json()
    assert health["status"] == "ok" and health["model"]["name"] == "DisCoPatch"
    page = server.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script src" not in page.text and "<link" not in page.text and "https://" not in page.text
    assert server.get("/", follow_redirects=False).headers["location"] == "/dashboard"


def test_load_no_request_lost_and_each_image_recorded_once(server, id_pngs) -> None:
    """4 concurrent clients x 25 requests x 2 images into one stream."""
    n_clients, n_requests = 4, 25
    acked: list[list[int]] = [[] for _ in range(n_clients)]
    failures: list[str] = []
    url = str(server.base_url)

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as cl:
            for k in range(n_requests):
                pngs = [id_pngs[(c * n_requests + k + j) % len(id_pngs)] for j in range(2)]
                files = [("images", (f"c{c}-r{k}-i{j}.png", b, "image/png")) for j, b in enumerate(pngs)]
                r = cl.post("/v1/streams/load-1/images", files=files)
                if r.status_code != 200:
                    failures.append(f"{c}/{k}: {r.status_code} {r.text[:200]}")
                    continue
                acked[c].extend(x["seq"] for x in r.json()["results"])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    seqs = sorted(s for a in acked for s in a)
    total = n_clients * n_requests * 2
    assert seqs == list(range(1, total + 1))
    rows = server.get("/v1/streams/load-1/images", params={"limit": 10_000}).json()
    expected = {f"c{c}-r{k}-i{j}.png" for c in range(n_clients) for k in range(n_requests) for j in range(2)}
    assert len(rows) == total and {r["source_id"] for r in rows} == expected
    assert [r["seq"] for r in rows] == list(range(1, total + 1))
    status = server.get("/v1/streams/load-1/status").json()
    assert status["n_recorded"] == total and status["time"] == total
