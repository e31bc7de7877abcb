"""Alert sinks: JSON lines, and webhooks with retries that never hold up the caller."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from discopatch.monitoring.alerts import AlertDispatcher, JsonlSink, WebhookSink, make_sinks
from discopatch.monitoring.drift import DriftConfig
from discopatch.monitoring.store import Store
from discopatch.monitoring.streams import Item, StreamRecorder


@contextmanager
def receiver(fail_first: int = 0, gate: threading.Event | None = None) -> Iterator[tuple[str, list[dict]]]:
    """A local webhook endpoint answering 500 to its first ``fail_first`` posts; ``gate`` holds every answer."""
    got: list[dict] = []
    calls = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            if gate is not None:
                gate.wait(30)
            calls[0] += 1
            ok = calls[0] > fail_first
            if ok:
                got.append(json.loads(body))
            self.send_response(200 if ok else 500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/hook", got
    finally:
        srv.shutdown()
        srv.server_close()


def test_jsonl_sink(tmp_path) -> None:
    sink = JsonlSink(tmp_path / "sub" / "alerts.jsonl")
    sink.send({"stream": "a", "kind": "drift"})
    sink.send({"stream": "a", "kind": "recovered"})
    lines = (tmp_path / "sub" / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["drift", "recovered"]


def test_webhook_retries_until_delivered() -> None:
    with receiver(fail_first=2) as (url, got):
        sink = WebhookSink(url, retries=3, backoff=0.01)
        sink.send({"stream": "s", "kind": "drift"})
        sink.close(timeout=20)
    assert got == [{"stream": "s", "kind": "drift"}]
    assert sink.delivered == 1 and sink.failed == 0


def test_webhook_gives_up_and_counts_a_failure() -> None:
    with receiver(fail_first=10) as (url, got):
        sink = WebhookSink(url, retries=1, backoff=0.01)
        sink.send({"kind": "drift"})
        sink.close(timeout=20)
    assert got == [] and sink.failed == 1


def test_webhook_send_does_not_wait_for_the_receiver() -> None:
    """While the receiver holds every request, send() still returns; a full queue drops the oldest alert."""
    gate = threading.Event()
    with receiver(gate=gate) as (url, got):
        sink = WebhookSink(url, retries=0, max_queue=2)
        for i in range(5):
            sink.send({"n": i})  # would hang here if sending waited for delivery
        assert sink.dropped >= 2
        gate.set()
        sink.close(timeout=20)
    assert [a["n"] for a in got][-1] == 4


def test_recorder_sends_drift_alerts_to_sinks(tmp_path, trained_detector, id_pngs, blank_png) -> None:
    with receiver() as (url, got):
        sinks = make_sinks([url], tmp_path / "alerts.jsonl", backoff=0.01)
        rec = StreamRecorder(
            trained_detector, Store(tmp_path / "m.db"), DriftConfig(window_size=30, min_window=10), alerts=sinks
        )
        rec.record("cam", [Item(f"id{i}", b) for i, b in enumerate(id_pngs[:20])])
        rec.record("cam", [Item(f"b{i}", blank_png) for i in range(20)])
        rec.close()
    assert [a["kind"] for a in got] == ["drift"]
    assert got[0]["stream"] == "cam" and got[0]["seq"] == 40 and "ks" in got[0]["tests"]
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert lines == got


def test_a_failing_sink_does_not_break_the_others() -> None:
    class Broken:
        def send(self, alert: dict) -> None:
            raise OSError("disk full")

        def close(self, timeout: float = 5.0) -> None:
            pass

    seen: list[dict] = []

    class Keep(Broken):
        def send(self, alert: dict) -> None:
            seen.append(alert)

    AlertDispatcher([Broken(), Keep()]).send({"kind": "drift"})
    assert seen == [{"kind": "drift"}]
