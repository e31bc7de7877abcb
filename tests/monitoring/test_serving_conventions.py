"""Probes, the model id, prometheus-client metrics, typed GET responses and raw image bodies."""

from __future__ import annotations

import io
import re
import sqlite3
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from discopatch.artifact.files import detector_id
from discopatch.detector import Detector
from discopatch.monitoring.service import create_app

parser = pytest.importorskip("prometheus_client.parser")


@pytest.fixture(scope="module")
def detector(model_dir) -> Detector:
    return Detector.load(model_dir)


def _families(text: str) -> dict:
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def _files(pngs: list[bytes]) -> list:
    return [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(pngs)]


def test_probes_and_model_id(detector, model_dir, tmp_path, id_pngs) -> None:
    """/livez is always 200; /readyz and /healthz turn 503 when a write fails, and name the model."""
    model_id = detector_id(model_dir)
    assert model_id and detector.detector_id == model_id
    with TestClient(create_app(detector, f"sqlite:///{tmp_path / 'm.db'}")) as c:
        assert c.get("/livez").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"model": "ok", "database": "ok"}, "model_id": model_id}
        assert c.get("/healthz").json()["model_id"] == model_id
        assert c.post("/v1/score", files=_files(id_pngs[:2])).json()["model_id"] == model_id
        assert c.post("/v1/streams/cam/images", files=_files(id_pngs[:1])).json()["model_id"] == model_id
        con = sqlite3.connect(tmp_path / "m.db")
        con.execute("DROP TABLE dp_images")  # reads still work, writes fail
        con.commit()
        con.close()
        assert c.post("/v1/streams/cam/images", files=_files(id_pngs[:1])).status_code == 503
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        assert ready.json()["checks"]["model"] == "ok" and "no such table" in ready.json()["checks"]["database"]
        assert c.get("/healthz").status_code == 503
        assert c.get("/livez").status_code == 200


def test_probes_stay_open_under_token_all(detector, tmp_path) -> None:
    with TestClient(create_app(detector, f"sqlite:///{tmp_path / 'm.db'}", token="t", token_all=True)) as c:
        assert [c.get(p).status_code for p in ("/livez", "/readyz", "/healthz")] == [200, 200, 200]
        assert c.get("/metrics").status_code == 401


def test_metrics_model_id_score_histogram_and_in_flight(detector, tmp_path, id_pngs, live_server) -> None:
    """Parsed with prometheus_client: the info metric carries the model id, every score lands in the histogram
    (whose buckets include the threshold), and a request held inside scoring shows in the in-flight gauge."""
    app = create_app(detector, f"sqlite:///{tmp_path / 'm.db'}")
    scorer = app.state.recorder.scorer
    real, entered, release = scorer.score, threading.Event(), threading.Event()

    def held(items, cancel=None):
        entered.set()
        release.wait(60)
        return real(items, cancel)

    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        body = c.post("/v1/score", files=_files(id_pngs[:5])).json()
        fam = _families(c.get("/metrics").text)
        (info,) = fam["discopatch"].samples if "discopatch" in fam else fam["discopatch_info"].samples
        assert info.labels["model_id"] == detector.detector_id and info.labels["preset"] == detector.preset.name
        hist = {(s.name, s.labels.get("le")): s.value for s in fam["discopatch_score"].samples}
        assert hist[("discopatch_score_count", None)] == 5
        assert hist[("discopatch_score_sum", None)] == pytest.approx(sum(r["score"] for r in body["results"]))
        below = sum(not r["is_ood"] for r in body["results"])
        assert hist[("discopatch_score_bucket", str(detector.threshold))] == below
        assert fam["discopatch_http_request_duration_seconds"].type == "histogram"
        assert fam["discopatch_http_requests_in_flight"].samples[0].value == 1  # the scrape itself

        scorer.score = held
        result: list[httpx.Response] = []
        t = threading.Thread(target=lambda: result.append(c.post("/v1/score", files=_files(id_pngs[:1]))))
        t.start()
        try:
            assert entered.wait(60)
            held_fam = _families(c.get("/metrics").text)
            assert held_fam["discopatch_http_requests_in_flight"].samples[0].value == 2
        finally:
            release.set()
            t.join(60)
            scorer.score = real
        assert result[0].status_code == 200
        fam = _families(c.get("/metrics").text)
        assert fam["discopatch_http_requests_in_flight"].samples[0].value == 1
        assert {s.value for s in fam["discopatch_score"].samples if s.name == "discopatch_score_count"} == {6}


def test_two_apps_keep_separate_metrics(detector, tmp_path, id_pngs) -> None:
    """Each app has its own registry, so building a second one neither fails nor shares counts."""
    a = TestClient(create_app(detector, f"sqlite:///{tmp_path / 'a.db'}"))
    b = TestClient(create_app(detector, f"sqlite:///{tmp_path / 'b.db'}"))
    with a, b:
        a.post("/v1/score", files=_files(id_pngs[:3]))
        count = {
            name: _families(cl.get("/metrics").text)["discopatch_score"].samples for name, cl in (("a", a), ("b", b))
        }
        assert [s.value for s in count["a"] if s.name == "discopatch_score_count"] == [3]
        assert [s.value for s in count["b"] if s.name == "discopatch_score_count"] == [0]


def test_get_endpoints_are_typed(detector, tmp_path, id_pngs) -> None:
    with TestClient(create_app(detector, f"sqlite:///{tmp_path / 'm.db'}", thumbnails="all")) as c:
        c.post("/v1/streams/cam/images", files=_files(id_pngs[:3]))
        spec = c.get("/openapi.json").json()
        refs = {
            path: spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            for path in ("/v1/streams", "/v1/streams/{name}/status", "/v1/streams/{name}/alerts",
                         "/v1/streams/{name}/images", "/healthz", "/livez", "/readyz")
        }  # fmt: skip
        assert refs["/v1/streams/{name}/status"]["$ref"].endswith("/StreamStatus")
        assert refs["/v1/streams"]["items"]["$ref"].endswith("/StreamListEntry")
        assert refs["/v1/streams/{name}/alerts"]["items"]["$ref"].endswith("/Alert")
        assert refs["/v1/streams/{name}/images"]["items"]["$ref"].endswith("/RecordedImage")
        assert refs["/healthz"]["$ref"].endswith("/Health") and refs["/readyz"]["$ref"].endswith("/Ready")
        schemas = spec["components"]["schemas"]
        assert {"is_drift", "p_val", "n_window", "window", "meta"} <= set(schemas["StreamStatus"]["properties"])
        status = c.get("/v1/streams/cam/status").json()
        assert set(status) == set(schemas["StreamStatus"]["properties"]) and status["n_recorded"] == 3
        rows = c.get("/v1/streams/cam/images").json()
        assert set(rows[0]) == set(schemas["RecordedImage"]["properties"]) and rows[0]["thumbnail"]
        assert c.get("/v1/streams").json()[0]["stream"] == "cam"


def _jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG")
    return buf.getvalue()


def test_raw_image_body(detector, tmp_path, id_pngs, fmnist) -> None:
    """One image as the body: scored like the same file in a multipart upload; type and size are checked."""
    with TestClient(create_app(detector, f"sqlite:///{tmp_path / 'm.db'}", max_image_bytes=4096)) as c:
        multi = c.post("/v1/score", files=_files(id_pngs[:1])).json()["results"][0]
        r = c.post("/v1/score", content=id_pngs[0], headers={"content-type": "image/png"}, params={"source_id": "a"})
        assert r.status_code == 200, r.text
        (res,) = r.json()["results"]
        assert res["score"] == multi["score"] and res["source_id"] == "a" and res["error"] is None
        r = c.post("/v1/score", content=id_pngs[0], headers={"content-type": "image/png"})
        assert r.json()["results"][0]["source_id"] == "image"
        jpeg = _jpeg(fmnist.test_images[0])
        assert c.post("/v1/score", content=jpeg, headers={"content-type": "image/jpeg"}).json()["n_errors"] == 0
        wrong = c.post("/v1/score", content=jpeg, headers={"content-type": "image/png"}).json()["results"][0]
        assert wrong["score"] is None and "sent as image/png but the data is JPEG" in wrong["error"]
        r = c.post("/v1/score", content=b"<svg/>", headers={"content-type": "image/svg+xml"})
        assert r.status_code == 415 and "image/png" in r.json()["detail"]
        big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8))
        buf = io.BytesIO()
        big.save(buf, format="PNG")
        assert len(buf.getvalue()) > 4096
        r = c.post("/v1/score", content=buf.getvalue(), headers={"content-type": "image/png"})
        assert r.status_code == 413 and "4096-byte limit" in r.json()["detail"]
        rec = c.post("/v1/streams/raw/images", content=id_pngs[1], headers={"content-type": "image/png"})
        assert rec.status_code == 200 and rec.json()["results"][0]["seq"] == 1


def test_docs_serve_swagger_ui_from_local_files(detector, tmp_path) -> None:
    """/docs is Swagger UI 5 (it renders OpenAPI 3.1, which FastAPI writes) from fastapi-offline's files, served
    here: the page names no other host and every asset it references is answered."""
    with TestClient(create_app(detector, f"sqlite:///{tmp_path / 'm.db'}")) as c:
        assert c.get("/openapi.json").json()["openapi"].startswith("3.1")
        page = c.get("/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        assert re.search(r"https?://", page.text) is None, page.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert {a.rsplit("/", 1)[-1] for a in assets} == {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}
        for a in assets:
            r = c.get(a)
            assert a.startswith("/") and r.status_code == 200, a
        bundle = c.get(next(a for a in assets if a.endswith(".js")))
        assert "javascript" in bundle.headers["content-type"]
        version = re.search(r'PACKAGE_VERSION:"(\d+)\.', bundle.text)
        assert version and int(version.group(1)) >= 5, "Swagger UI 4 cannot render OpenAPI 3.1"
        assert "'/openapi.json'" in page.text and '"validatorUrl": null' in page.text
