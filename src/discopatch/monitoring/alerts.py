"""Alert sinks: a JSON-lines file and webhooks.

Alerts are persisted in the database first (by the caller, in the same transaction as the images that raised
them); the sinks are notifications on top. A webhook is delivered by a background thread with a timeout, retries
and a bounded queue, so a slow or dead receiver never delays scoring: when the queue is full the oldest pending
alert is dropped and counted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("discopatch.monitoring")


class AlertSink(Protocol):
    def send(self, alert: dict[str, Any]) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


class JsonlSink:
    """Appends one JSON object per line and flushes, so ``tail -f`` and log shippers see alerts at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def send(self, alert: dict[str, Any]) -> None:
        line = json.dumps(alert, default=str, sort_keys=True) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()

    def close(self, timeout: float = 5.0) -> None:
        return None


class WebhookSink:
    """POSTs each alert as JSON to ``url`` from a background thread.

    ``retries`` further attempts follow a failure (connection error, timeout or HTTP status >= 300), with
    exponential back-off starting at ``backoff`` seconds. ``delivered`` / ``failed`` / ``dropped`` count outcomes.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_queue: int = 1000,
        headers: dict[str, str] | None = None,
    ) -> None:
        import httpx

        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.delivered = self.failed = self.dropped = 0
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="discopatch-webhook", daemon=True)
        self._thread.start()

    def send(self, alert: dict[str, Any]) -> None:
        """Queue the alert and return immediately."""
        while True:
            try:
                self._queue.put_nowait(alert)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            self._deliver(alert)

    def _deliver(self, alert: dict[str, Any]) -> None:
        body = json.dumps(alert, default=str).encode()
        for attempt in range(self.retries + 1):
            try:
                r = self._client.post(self.url, content=body, headers={"content-type": "application/json"})
                if r.status_code < 300:
                    self.delivered += 1
                    return
                err = f"HTTP {r.status_code}"
            except Exception as e:  # any transport failure is retried, never raised into scoring
                err = f"{type(e).__name__}: {e}"
            if attempt < self.retries and not self._stop.is_set():
                time.sleep(self.backoff * 2**attempt)
        self.failed += 1
        log.warning("webhook %s: alert not delivered after %d attempt(s): %s", self.url, self.retries + 1, err)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to ``timeout`` seconds), then stop the thread."""
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._client.close()


class AlertDispatcher:
    """Fans an alert out to every sink; a failing sink is logged and never stops the others or the caller."""

    def __init__(self, sinks: Iterable[AlertSink] = ()) -> None:
        self.sinks = list(sinks)

    def send(self, alert: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.send(alert)
            except Exception as e:
                log.warning("alert sink %s failed: %s", type(sink).__name__, e)

    def close(self, timeout: float = 5.0) -> None:
        for sink in self.sinks:
            sink.close(timeout)


def make_sinks(webhooks: Iterable[str] = (), jsonl: str | Path | None = None, **webhook_kw: Any) -> AlertDispatcher:
    """Sinks from command-line style options."""
    sinks: list[AlertSink] = [WebhookSink(u, **webhook_kw) for u in webhooks]
    if jsonl:
        sinks.append(JsonlSink(jsonl))
    return AlertDispatcher(sinks)
