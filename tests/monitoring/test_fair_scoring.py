"""No head-of-line blocking. One request of many slow images held the decode pool: a one-image
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


class DecodeLog:
    """A spy on the service's decode step: the size of each input whose decode starts, in order (``sizes``); the
    real decode runs unchanged. With ``hold_after = k`` every large decode after the first k waits for ``gate``
    (at most :data:`HOLD_S`), so that what happens meanwhile does not depend on how fast this machine decodes."""

    def __init__(self, big_size: int) -> None:
        self.sizes: list[int] = []
        self.big_size = big_size
        self.hold_after: int | None = None
        self.gate = threading.Event()

    def big_started(self) -> int:
        return sum(n == self.big_size for n in self.sizes)


#: Longest a held decode waits for the gate (the old code needs it to end: its small request queued behind them).
HOLD_S = 20.0


@pytest.fixture
def decode_log(monkeypatch, big_png) -> DecodeLog:
    log = DecodeLog(len(big_png))
    module = sys.modules[Scorer.__module__]  # where the scorer looks its decode step up
    real = module._decode_one

    def spy(data, *args):
        log.sizes.append(len(data))
        held = len(data) == log.big_size and log.hold_after is not None and log.big_started() > log.hold_after
        if held and not log.gate.wait(HOLD_S):
            log.gate.set()  # held long enough: the rest go through
        return real(data, *args)

    monkeypatch.setattr(module, "_decode_one", spy)
    return log


def _post_big(url: str, big_png: bytes, out: dict, timeout: float = 300) -> None:
    files = [("images", (f"big{i}.png", big_png, "image/png")) for i in range(N_BIG)]
    try:
        out["response"] = httpx.post(f"{url}/v1/score", files=files, timeout=timeout)
    except httpx.TimeoutException as e:
        out["error"] = e


def _wait_for(cond, limit: float = 120) -> bool:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _in_flight(url: str) -> float:
    """Requests being served, the scrape itself left out."""
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("discopatch_http_requests_in_flight "):
            return float(line.split()[1]) - 1
    raise AssertionError("no in-flight gauge")


def test_a_small_request_is_answered_while_a_large_one_runs(
    trained_detector, tmp_path, live_server, big_png, small_png, decode_log
) -> None:
    """One request of many slow images queued all its decodes ahead of everyone else's: a one-image request sent
    after it waited for all of them. Now a request holds at most ``max_decodes - 1`` decodes queued or running.
    The large request's decodes after its second are held until the small request is answered."""
    decode_log.hold_after = 2
    app = create_app(trained_detector, f"sqlite:///{tmp_path / 'm.db'}", max_decodes=2)
    with live_server(app) as url:
        big: dict = {}
        sender = threading.Thread(target=_post_big, args=(url, big_png, big))
        sender.start()
        assert _wait_for(lambda: decode_log.big_started() >= 1), "the large request never started decoding"
        r = httpx.post(f"{url}/v1/score", files=_files(small_png), timeout=120)
        big_decodes_before = decode_log.sizes.index(len(small_png))
        still_running = sender.is_alive()
        decode_log.gate.set()
        sender.join(300)
    assert r.status_code == 200 and r.json()["results"][0]["error"] is None
    assert still_running, "the large request finished first"
    assert big_decodes_before <= 4, decode_log.sizes  # before: all 24 decodes of the large one came first
    assert big["response"].status_code == 200 and big["response"].json()["n_errors"] == 0


@pytest.mark.parametrize("how", ["timeout", "client-gone"])
def test_a_cancelled_request_releases_its_queued_decodes(
    trained_detector, tmp_path, live_server, big_png, small_png, decode_log, how
) -> None:
    """A request that timed out (503) kept its queued decodes running for minutes, and so did one whose client
    went away: later requests waited behind them. Now the rest of its decodes are dropped. Its decodes after the
    second are held until the request has ended, so the cancel always comes while most are still to do."""
    decode_log.hold_after = 2
    timeout_s = 1.0 if how == "timeout" else 300.0
    app = create_app(trained_detector, f"sqlite:///{tmp_path / 'm.db'}", max_decodes=2, timeout_s=timeout_s)
    with live_server(app) as url:
        big: dict = {}
        _post_big(url, big_png, big, timeout=300 if how == "timeout" else 2.0)
        if how == "timeout":
            assert big["response"].status_code == 503 and "request timeout" in big["response"].json()["detail"]
        else:
            assert isinstance(big.get("error"), httpx.TimeoutException)  # the client gave up and closed
            _wait_for(lambda: _in_flight(url) == 0, limit=10)  # the server noticed (the old code never did)
        decode_log.gate.set()
        r = httpx.post(f"{url}/v1/score", files=_files(small_png), timeout=120)
        assert r.status_code == 200 and r.json()["results"][0]["error"] is None
        big_decodes = decode_log.sizes.index(len(small_png))
    assert big_decodes <= 4, decode_log.sizes  # before: all 24, the small request's last
