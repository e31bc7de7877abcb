"""The dashboard and /docs end to end in headless Debian chromium (Playwright): ID images, then shifted ones, then
the alert; the header, the chart axes, the histogram, the heat map of a flagged image and a screenshot."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from discopatch.detector import Detector
from discopatch.monitoring.drift import DriftConfig
from discopatch.monitoring.service import create_app

CHROMIUM = os.environ.get("DISCOPATCH_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


def _post(client: httpx.Client, stream: str, pngs: list[bytes], prefix: str) -> dict:
    files = [("images", (f"{prefix}{i}.png", b, "image/png")) for i, b in enumerate(pngs)]
    r = client.post(f"/v1/streams/{stream}/images", files=files)
    assert r.status_code == 200, r.text
    return r.json()


def _red_pixels(png: bytes) -> int:
    """Pixels of the drift colour (#cf222e) in a screenshot."""
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(a - [207, 34, 46]).sum(-1) < 30).sum())


def test_alert_appears_on_the_dashboard(model_dir, live_server, tmp_path, id_pngs, blank_png, png) -> None:
    detector = Detector.load(model_dir)
    drift = DriftConfig(window_size=40, min_window=10)
    app = create_app(detector, f"sqlite:///{tmp_path / 'dash.db'}", drift_config=drift)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client, sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        except Exception as e:  # a chromium that Playwright cannot drive is an environment problem, not a bug
            pytest.skip(f"chromium could not be launched by Playwright: {e}")
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            foreign: list[str] = []
            page.on("request", lambda req: None if req.url.startswith(url) else foreign.append(req.url))
            page.goto(f"{url}/dashboard?refresh=250")
            sync_api.expect(page.locator("#empty")).to_be_visible()

            # the header names the model and its threshold
            header = page.locator("header #model")
            sync_api.expect(header.locator(".model-id")).to_have_text(detector.detector_id[:16])
            assert detector.detector_id in header.get_attribute("title")
            assert float(header.locator(".threshold").text_content()) == pytest.approx(detector.threshold, rel=1e-5)

            _post(client, "a-calm", id_pngs[40:50], "calm")
            for start in range(0, 30, 10):
                assert not _post(client, "cam-1", id_pngs[start : start + 10], f"id{start}-")["drift"]["is_drift"]
            card = page.locator('section.stream[data-stream="cam-1"]')
            sync_api.expect(card.locator(".badge")).to_have_text("OK", timeout=20_000)
            sync_api.expect(card.locator(".stats")).to_contain_text("recorded: 30", timeout=20_000)
            sync_api.expect(page.locator("section.stream").first).to_have_attribute("data-stream", "a-calm")
            assert card.locator("svg.timeline circle").count() == 30
            assert card.locator("svg.timeline line.threshold").count() == 1
            assert card.locator("li.alert-drift").count() == 0

            # readable charts: time on the x axis, ticks and labels on both axes, the histogram against calibration
            timeline = card.locator("svg.timeline")
            assert timeline.locator(".x-tick").count() >= 2 and timeline.locator(".y-tick").count() >= 2
            assert timeline.locator(".axis-label").all_text_contents() == ["time (local)", "score", "alarm rate"]
            tick_labels = timeline.locator("text").all_text_contents()
            assert any(":" in t for t in tick_labels), tick_labels  # clock times
            hist = card.locator("svg.histogram")
            sync_api.expect(hist.locator("path.calibration")).to_have_count(1)
            assert hist.locator("rect.bar-window").count() >= 1 and hist.locator("line.threshold").count() == 1
            assert hist.locator(".x-tick").count() >= 2
            sync_api.expect(hist.locator(".axis-label").first).to_contain_text("window: 30 images")

            out = _post(client, "cam-1", [blank_png] * 25, "blank")
            assert out["drift"]["is_drift"]
            sync_api.expect(card.locator("li.alert-drift")).to_have_count(1, timeout=20_000)
            sync_api.expect(card.locator(".badge")).to_contain_text("DRIFT")
            sync_api.expect(card.locator("li.alert-drift")).to_contain_text("drift in stream cam-1")
            sync_api.expect(card.locator("svg.timeline line.alert-mark")).to_have_count(1)
            sync_api.expect(card.locator("svg.timeline circle")).to_have_count(55)
            # the drifting stream moves to the top
            sync_api.expect(page.locator("section.stream").first).to_have_attribute("data-stream", "cam-1")

            # a flagged image shows its heat map (pixel checkerboards are flagged; blank frames drift but are not)
            checker = png((np.indices((28, 28)).sum(0) % 2 * 255).astype(np.uint8))
            assert all(r["is_ood"] for r in _post(client, "cam-1", [checker] * 3, "checker")["results"])
            thumb = card.locator(".thumbs img").first
            sync_api.expect(thumb).to_be_visible()
            thumb.click()
            fig = card.locator("figure.heatmap")
            heat = fig.locator("img")
            sync_api.expect(heat).to_be_visible(timeout=20_000)
            page.wait_for_function("img => img.complete && img.naturalWidth >= 256", arg=heat.element_handle())
            sync_api.expect(fig).to_contain_text("explains D's share of the score only")
            sync_api.expect(fig).to_contain_text("32×32 preprocessed image")
            assert page.locator("#error").text_content() == ""
            assert foreign == [], f"the dashboard fetched from elsewhere: {foreign}"

            shot = page.screenshot(full_page=True)
            (tmp_path / "dashboard.png").write_bytes(shot)
            with Image.open(io.BytesIO(shot)) as im:
                assert im.size[0] == 1280
            assert _red_pixels(card.screenshot()) > 50  # the drift badge, the flagged dots and the alert mark
            assert _red_pixels(page.locator('section.stream[data-stream="a-calm"] .badge').screenshot()) == 0
        finally:
            browser.close()


def test_docs_page_renders_offline(model_dir, live_server, tmp_path) -> None:
    """/docs is Swagger UI from the package's local files: every operation renders and nothing is fetched elsewhere."""
    app = create_app(model_dir, f"sqlite:///{tmp_path / 'docs.db'}")
    with live_server(app) as url, sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        except Exception as e:
            pytest.skip(f"chromium could not be launched by Playwright: {e}")
        try:
            spec = httpx.get(f"{url}/openapi.json").json()
            n_ops = sum(len(ops) for ops in spec["paths"].values())
            page = browser.new_page()
            foreign: list[str] = []
            page.on("request", lambda req: None if req.url.startswith(url) else foreign.append(req.url))
            page.goto(f"{url}/docs")
            sync_api.expect(page.locator(".opblock")).to_have_count(n_ops, timeout=30_000)
            sync_api.expect(page.locator(".info .title")).to_contain_text("discopatch")
            sync_api.expect(page.locator(".info")).to_contain_text("OAS 3.1")
            sync_api.expect(page.locator("#operations-scoring-score_v1_score_post")).to_be_visible()
            assert foreign == [], f"/docs fetched from elsewhere: {foreign}"
        finally:
            browser.close()
