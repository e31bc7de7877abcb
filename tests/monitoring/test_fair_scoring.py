"""Issue 25, item 2: no head-of-line blocking. One request of many slow images held the decode pool: a one-image
request sent after it waited for all of them, and a request that timed out (or whose client went away) kept its
queued decodes running. Each test spies on the decode step (the real decode runs) to see the order of work."""

from __future__ import annotations

import io
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from discopatch.monitoring.service import create_app
from discopatch.monitoring.streams import Scorer

N_BIG = 24


@pytest.fixture(scope="module")
def small_png(id_pngs) -> bytes:
    return id_pngs[0]


def _files(data: bytes) -> list:
    return [("images", ("small.png", data, "image/png"))]


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """A 4096 x 4096 PNG of 75 KB whose decode takes a fraction of a second: 24 of them keep the pool busy."""
    side = 4096
    a = (np.arange(side * side, dtype=np.uint32) % 251).astype(np.uint8).reshape(side, side)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def decode_log(monkeypatch) -> list[int]:
    """A spy on the service's decode step: the size of each input whose decode starts, in order (the real decode
    runs unchanged)."""
    started: list[int] = []
    module = sys.modules[Scorer.__module__]  # where the scorer looks its decode step up
    real = module._decode_one

    def spy(data, *args):
        started.append(len(data))
        return real(data, *args)

    monkeypatch.setattr(module, "_decode_one", spy)
    return started


def _post_big(url: str, big_png: bytes, out: dict, timeout: float = 300) -> None:
    files = [("images", (f"big{i}.png", big_png, "image/png")) for i in range(N_BIG)]
    try:
        out["response"] = httpx.post(f"{url}/v1/score", files=files, timeout=timeout)
    except httpx.TimeoutException as e:
        out["error"] = e


def _wait_for(cond, what: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_small_request_is_answered_while_a_large_one_runs(
    trained_detector, tmp_path, live_server, big_png, small_png, decode_log
) -> None:
    """One request of many slow images queued all its decodes ahead of everyone else's: a one-image request sent
    after it waited for all of them. Now a request holds at most ``max_decodes - 1`` decodes queued or running."""
    app = create_app(trained_detector, f"sqlite:///{tmp_path / 'm.db'}", max_decodes=2)
    with live_server(app) as url:
        big: dict = {}
        sender = threading.Thread(target=_post_big, args=(url, big_png, big))
        sender.start()
        _wait_for(lambda: len(decode_log) >= 1, "the large request's first decode")
        r = httpx.post(f"{url}/v1/score", files=_files(small_png), timeout=120)
        big_decodes_before = decode_log.index(len(small_png))
        still_running = sender.is_alive()
        sender.join(300)
    assert r.status_code == 200 and r.json()["results"][0]["error"] is None
    assert still_running, "the large request finished first"
    assert big_decodes_before <= N_BIG // 2, decode_log  # before: all 24 decodes of the large one came first
    assert big["response"].status_code == 200 and big["response"].json()["n_errors"] == 0


@pytest.mark.parametrize("how", ["timeout", "client-gone"])
def test_a_cancelled_request_releases_its_queued_decodes(
    trained_detector, tmp_path, live_server, big_png, small_png, decode_log, how
) -> None:
    """A request that timed out (503) kept its queued decodes running for minutes, and so did one whose client
    went away: later requests waited behind them. Now the rest of its decodes are dropped."""
    timeout_s = 1.0 if how == "timeout" else 300.0
    app = create_app(trained_detector, f"sqlite:///{tmp_path / 'm.db'}", max_decodes=2, timeout_s=timeout_s)
    with live_server(app) as url:
        big: dict = {}
        _post_big(url, big_png, big, timeout=300 if how == "timeout" else 2.0)
        if how == "timeout":
            assert big["response"].status_code == 503 and "request timeout" in big["response"].json()["detail"]
        else:
            assert isinstance(big.get("error"), httpx.TimeoutException)  # the client gave up and closed
        r = httpx.post(f"{url}/v1/score", files=_files(small_png), timeout=120)
        assert r.status_code == 200 and r.json()["results"][0]["error"] is None
        big_decodes = decode_log.index(len(small_png))
    assert big_decodes <= N_BIG // 2, decode_log  # before: all 24, the small request's last
