"""The dashboard end to end in headless Debian chromium (Playwright): ID images, then shifted ones, then the alert."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

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


def test_alert_appears_on_the_dashboard(trained_detector, live_server, tmp_path, id_pngs, blank_png) -> None:
    app = create_app(
        trained_detector, f"sqlite:///{tmp_path / 'dash.db'}", drift_config=DriftConfig(window_size=40, min_window=10)
    )
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client, sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        except Exception as e:  # a chromium that Playwright cannot drive is an environment problem, not a bug
            pytest.skip(f"chromium could not be launched by Playwright: {e}")
        try:
            page = browser.new_page()
            foreign: list[str] = []
            page.on("request", lambda req: None if req.url.startswith(url) else foreign.append(req.url))
            page.goto(f"{url}/dashboard?refresh=250")
            sync_api.expect(page.locator("#empty")).to_be_visible()

            for start in range(0, 30, 10):
                assert not _post(client, "cam-1", id_pngs[start : start + 10], f"id{start}-")["drift"]["is_drift"]
            card = page.locator('section.stream[data-stream="cam-1"]')
            sync_api.expect(card.locator(".badge")).to_have_text("OK", timeout=20_000)
            sync_api.expect(card.locator(".stats")).to_contain_text("recorded: 30", timeout=20_000)
            assert card.locator("svg.timeline circle").count() == 30
            assert card.locator("svg.timeline line.threshold").count() == 1
            assert card.locator("li.alert-drift").count() == 0

            out = _post(client, "cam-1", [blank_png] * 25, "blank")
            assert out["drift"]["is_drift"]
            sync_api.expect(card.locator("li.alert-drift")).to_have_count(1, timeout=20_000)
            sync_api.expect(card.locator(".badge")).to_contain_text("DRIFT")
            sync_api.expect(card.locator("li.alert-drift")).to_contain_text("drift in stream cam-1")
            sync_api.expect(card.locator("svg.timeline line.alert-mark")).to_have_count(1)
            sync_api.expect(card.locator("svg.timeline circle")).to_have_count(55)
            assert page.locator("#error").text_content() == ""
            assert foreign == [], f"the dashboard fetched from elsewhere: {foreign}"
        finally:
            browser.close()
