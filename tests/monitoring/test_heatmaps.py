"""Heat maps over HTTP (/v1/score?explain=true, kept ones of recorded images), the model
endpoint and the window-vs-calibration histogram."""

from __future__ import annotations

import io
import sqlite3

import httpx
import numpy as np
import pytest
from PIL import Image

from discopatch.detector import Detector
from discopatch.monitoring.drift import DriftConfig
from discopatch.monitoring.service import create_app, heatmap_png
from discopatch.row_layout import VALUE_COLUMNS

QUADRANTS = [(slice(0, 16), slice(0, 16)), (slice(0, 16), slice(16, 32)), (slice(16, 32), slice(0, 16)),
             (slice(16, 32), slice(16, 32))]  # fmt: skip


@pytest.fixture(scope="module")
def server(local_detector, live_server, tmp_path_factory):
    """The fused 8-px-patch detector behind a live server (flagged images keep thumbnails and heat maps)."""
    db = tmp_path_factory.mktemp("heatmaps") / "monitor.db"
    app = create_app(local_detector, f"sqlite:///{db}", drift_config=DriftConfig(window_size=40, min_window=10))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        client.db_path = db  # type: ignore[attr-defined]
        yield client


def _files(pngs: list[bytes], prefix: str = "img") -> list:
    return [("images", (f"{prefix}{i}.png", b, "image/png")) for i, b in enumerate(pngs)]


def _checkered(image: np.ndarray, q: int) -> np.ndarray:
    """``image`` with a pixel checkerboard (a strong high-frequency corruption) over quadrant ``q``."""
    out = image.copy()
    ys, xs = QUADRANTS[q]
    out[ys, xs] = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    return out


def _heat(ex: dict) -> np.ndarray:
    """The heat map from the response alone: each pixel's mean contribution over the patches covering it."""
    size, p = ex["image_size"], ex["patch_size"]
    total, count = np.zeros((size, size)), np.zeros((size, size))
    for (y, x), c in zip(ex["corners"], ex["contributions"]):
        total[y : y + p, x : x + p] += c
        count[y : y + p, x : x + p] += 1
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def test_explained_scores_equal_the_plain_ones(server, local_detector: Detector, id_pngs) -> None:
    pngs = id_pngs[:5]
    files = [*_files(pngs), ("images", ("junk.png", b"not an image", "image/png"))]
    plain = server.post("/v1/score", files=files).json()
    r = server.post("/v1/score", files=files, params={"explain": "true"})
    assert r.status_code == 200, r.text
    explained = r.json()
    assert all("explanation" not in x for x in plain["results"])  # without explain=true: the earlier shape
    for p, e in zip(plain["results"], explained["results"]):
        assert {k: v for k, v in e.items() if k != "explanation"} == p
    assert "explanation" not in explained["results"][5] and explained["results"][5]["error"]
    library = local_detector.explain(pngs)
    for res, lib in zip(explained["results"][:5], library):
        ex = res["explanation"]
        assert res["score"] == ex["score"] == lib.score
        assert ex["image_size"] == 32 and ex["patch_size"] == 8 and len(ex["corners"]) == local_detector.n_patches
        assert ex["corners"] == lib.corners.tolist() and ex["contributions"] == lib.contributions.tolist()
        assert np.mean(ex["contributions"]) == pytest.approx(ex["d_score"], abs=1e-12)
        assert ex["score_mode"] == "fused" and ex["score"] == max(ex["d_z"], ex["stats_z"])
        assert ex["source"] == ("statistics" if ex["stats_z"] > ex["d_z"] else "discriminator")
        assert "share of the score only" in ex["note"]


def test_a_fused_detector_sends_d_score_in_the_row_layout(server, local_detector: Detector, id_pngs) -> None:
    """The service's per-image results are the library's row values: ``d_score`` included for a fused detector,
    equal to D's own score, null for an unreadable image; streams answer with the same values."""
    pngs = id_pngs[5:8]
    files = [*_files(pngs), ("images", ("junk.png", b"not an image", "image/png"))]
    body = server.post("/v1/score", files=files).json()
    library = local_detector.predict(pngs)
    layout = ["index", "source_id", *VALUE_COLUMNS]
    assert [list(r)[: len(layout)] for r in body["results"]] == [layout] * 4
    assert [r["d_score"] for r in body["results"][:3]] == library.d_scores.tolist()
    assert [r["score"] for r in body["results"][:3]] == library.scores.tolist()
    assert body["results"][3]["d_score"] is None and body["results"][3]["error"]
    streamed = server.post("/v1/streams/d-score/images", files=files).json()["results"]
    assert [r["d_score"] for r in streamed] == [r["d_score"] for r in body["results"]]


def test_a_corrupted_quadrant_is_hottest_over_http(server, local_detector: Detector, fmnist, png) -> None:
    clean = local_detector._stack(fmnist.test_images[:4])
    pngs = [png(_checkered(img, q)) for q in range(4) for img in clean]
    r = server.post("/v1/score", files=_files(pngs), params={"explain": "1"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    for q in range(4):
        means = np.zeros(4)
        for res in results[q * len(clean) : (q + 1) * len(clean)]:
            heat = _heat(res["explanation"])
            means += [np.nanmean(heat[ys, xs]) for ys, xs in QUADRANTS]
        assert np.argmax(means) == q, (q, means / len(clean))


def test_bad_values_are_clear_4xx(server, id_pngs) -> None:
    r = server.post("/v1/score", files=_files(id_pngs[:1]), params={"explain": "maybe"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "explain"]
    r = server.post("/v1/streams/cam/images", files=_files(id_pngs[:1]), params={"explain": "true"})
    assert r.status_code == 400 and "/v1/images/{id}/explanation" in r.json()["detail"]
    assert server.get("/v1/streams/cam/status").status_code == 404  # refused before anything was recorded
    assert server.get("/v1/images/0/explanation").status_code == 422
    r = server.get(f"/v1/images/{2**62}/explanation")
    assert r.status_code == 404 and "--thumbnails" in r.json()["detail"]
    assert server.get("/v1/streams/nope/histogram").status_code == 404
    server.post("/v1/streams/hist-bins/images", files=_files(id_pngs[:2]))
    assert server.get("/v1/streams/hist-bins/histogram", params={"bins": 1}).status_code == 422


def test_a_flagged_image_keeps_its_heat_map(server, local_detector: Detector, fmnist, id_pngs, png) -> None:
    bad = png(_checkered(local_detector._stack(fmnist.test_images[7:8])[0], 1))
    files = [*_files(id_pngs[30:34]), ("images", ("bad.png", bad, "image/png"))]
    out = server.post("/v1/streams/kept/images", files=files)
    assert out.status_code == 200, out.text
    recorded = out.json()["results"]
    assert recorded[4]["is_ood"], "the checkered image should be flagged"
    rows = {r["source_id"]: r for r in server.get("/v1/streams/kept/images").json()}
    for r in recorded:
        row = rows[r["source_id"]]
        assert (row["heatmap"] is not None) == (row["thumbnail"] is not None) == r["is_ood"]
    row = rows["bad.png"]
    assert row["heatmap"] == f"/v1/images/{row['id']}/heatmap.png"
    kept = server.get(f"/v1/images/{row['id']}/explanation").json()
    fresh = server.post("/v1/score", files=[("images", ("bad.png", bad, "image/png"))], params={"explain": True})
    (now,) = fresh.json()["results"]
    assert kept == now["explanation"] and kept["score"] == row["score"]
    pic = server.get(row["heatmap"])
    assert pic.status_code == 200 and pic.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(pic.content)) as im:
        assert im.mode == "RGB" and im.size[0] >= 256
        assert im.size[1] > im.size[0] and "score" in im.info["Description"]  # the legend strip below the map
        heat = np.asarray(im).astype(int)[: im.size[0]]  # the square map above it
    # the overlay is red where D calls patches fake-like: the checkered (top-right) quadrant is the reddest
    redness = heat[..., 0] - heat[..., 2]
    half = heat.shape[0] // 2
    quads = [redness[:half, :half], redness[:half, half:], redness[half:, :half], redness[half:, half:]]
    assert np.argmax([q.mean() for q in quads]) == 1

    # a database written before heat maps were kept: the thumbnail stays, the heat map is honestly absent
    con = sqlite3.connect(server.db_path)
    con.execute("DELETE FROM dp_explanations WHERE image_id = ?", (row["id"],))
    con.commit()
    con.close()
    again = {r["source_id"]: r for r in server.get("/v1/streams/kept/images").json()}["bad.png"]
    assert again["thumbnail"] and again["heatmap"] is None
    assert server.get(row["heatmap"]).status_code == 404


def test_heatmap_over_a_smaller_thumbnail_keeps_the_map(local_detector: Detector, fmnist, png) -> None:
    """A thumbnail stored smaller than the preprocessed image is scaled up under the same exact map."""
    e = local_detector.explain(fmnist.test_images[:1])[0]
    full = np.asarray(Image.open(io.BytesIO(heatmap_png(e.to_dict(), png(e.image)))))
    small = Image.fromarray(e.image).resize((16, 16), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    scaled = np.asarray(Image.open(io.BytesIO(heatmap_png(e.to_dict(), buf.getvalue()))))
    assert scaled.shape == full.shape and np.abs(scaled.astype(int) - full.astype(int)).max() > 0
    # a grey backdrop adds the same to red and blue, so red minus blue is the map alone: equal up to rounding
    redness = [a[..., 0].astype(int) - a[..., 2].astype(int) for a in (scaled, full)]
    assert np.abs(redness[0] - redness[1]).max() <= 1 and np.ptp(redness[1]) > 20


def test_model_and_histogram(server, local_detector: Detector, id_pngs, blank_png) -> None:
    m = server.get("/v1/model").json()
    cal = local_detector.calibration
    assert m == {
        "model_id": None,  # never saved
        "preset": "tiny-explain",
        "score_mode": "fused",
        "threshold": cal.threshold,
        "target_fpr": cal.target_fpr,
        "n_calibration": cal.n,
        "image_size": 32,
        "patch_size": 8,
        "n_patches": local_detector.n_patches,
        "patch_aggregate": "mean",
        "n_patches_kept": local_detector.n_patches,
    }
    server.post("/v1/streams/hist/images", files=_files(id_pngs[40:60]))
    h = server.get("/v1/streams/hist/histogram", params={"bins": 12}).json()
    assert len(h["edges"]) == 13 and h["edges"] == sorted(h["edges"])
    assert sum(h["calibration"]) == h["n_calibration"] == cal.n
    assert sum(h["window"]) == h["n_window"] == 20
    assert h["edges"][0] <= h["threshold"] <= h["edges"][-1] and h["threshold"] == cal.threshold
    blank = local_detector.score([np.zeros((28, 28), np.uint8)])[0]
    server.post("/v1/streams/hist/images", files=_files([blank_png] * 30, "blank"))
    h = server.get("/v1/streams/hist/histogram", params={"bins": 12}).json()
    assert h["n_window"] == 40  # the window's length
    b = min(np.searchsorted(h["edges"], blank, side="right") - 1, 11)
    assert h["window"][b] == 30  # every blank image lands in the bin of its score
    status = server.get("/v1/streams/hist/status").json()
    assert status["n_window"] == h["n_window"]
