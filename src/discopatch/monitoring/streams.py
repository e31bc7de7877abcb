"""Score images, update a stream's drift monitor and persist both: the core shared by ``serve`` and ``monitor``.

Concurrency: decoding and inference are :class:`~discopatch.monitoring.scoring.Scorer`'s (a shared decode pool,
a share of it per request, one inference lock); each stream has its own lock
around "update the monitor, commit, swap in the new monitor", so images get dense sequence numbers in commit
order and a failed commit leaves the in-memory state untouched. A call returns only after its commit.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
import time
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.exc import SQLAlchemyError

from ..data.images import utf8_text
from ..detector import Detector
from ..errors import ConfigError
from ..inference.explain import Explanation
from ..row_layout import VALUE_COLUMNS
from . import THUMBNAILS
from .alerts import AlertDispatcher
from .drift import DriftConfig, DriftMonitor
from .health import DbFailures
from .scoring import MAX_DECODES, Item, Scorer
from .store import AlreadyRecorded, Store, StoredRequest, StreamConflict
from .tables import STORED_VALUES

log = logging.getLogger("discopatch.monitoring")

STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Longest source id stored: ``dp_images.source_id`` is VARCHAR(1024), which PostgreSQL enforces and SQLite does not.
MAX_SOURCE_ID = 1024
#: Error messages are cut to this many characters before they are stored.
MAX_ERROR_CHARS = 2000
#: Times a write is recomputed from the database after another writer got in first, before giving up.
MAX_RESYNC = 5
#: Idempotency keys: 1-255 printable ASCII characters, no space at either end (``dp_requests.key`` is VARCHAR(255)).
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?")


class KeyReused(ValueError):
    """An idempotency key already recorded in the stream came again with a different payload."""


def check_stream_name(name: str) -> str:
    if not STREAM_NAME.fullmatch(name):  # ``match`` lets ``$`` accept a trailing newline
        raise ConfigError(
            f"invalid stream name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_idempotency_key(key: str) -> str:
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise ConfigError(
            "invalid idempotency key: use 1-255 printable ASCII characters (no leading or trailing space), "
            "for example a UUID"
        )
    return key


def payload_fingerprint(items: list[Item]) -> str:
    """SHA-256 (hex) over each item's source id and image bytes, or its early error: what a retry must repeat."""
    h = hashlib.sha256()
    for it in items:
        data: str | None
        if isinstance(it.data, bytes):
            data = hashlib.sha256(it.data).hexdigest()
        else:
            data = None if it.data is None else f"path:{it.data}"
        h.update(json.dumps([it.source_id, data, it.error]).encode() + b"\n")
    return h.hexdigest()


def make_storable(result: dict[str, Any]) -> None:
    """Normalise ``result``'s text fields so that every database stores them alike, before the transaction.

    Text is made valid UTF-8 (:func:`~discopatch.data.images.utf8_text`; neither database takes a lone surrogate)
    and errors are cut to :data:`MAX_ERROR_CHARS` with NULs escaped. A source id that cannot be stored as given
    (longer than :data:`MAX_SOURCE_ID`, or with a NUL, which PostgreSQL refuses) turns its image into an error
    entry: one such image used to fail the whole batch on PostgreSQL, while SQLite kept it.
    """
    sid = result["source_id"]
    if sid is not None:
        sid = utf8_text(sid)
        problem = None
        if len(sid) > MAX_SOURCE_ID:
            problem = f"source id of {len(sid)} characters is longer than the {MAX_SOURCE_ID}-character limit"
        elif "\x00" in sid:
            problem = "source id contains a NUL character"
        if problem is None:
            result["source_id"] = sid
        else:
            name = f"images[{result['index']}]"
            result.update({k: None for k in VALUE_COLUMNS if k in result}, source_id=name, error=f"{name}: {problem}")
    if result["error"] is not None:
        result["error"] = utf8_text(result["error"]).replace("\x00", "\\x00")[:MAX_ERROR_CHARS]


def thumbnail_png(img: np.ndarray, size: int = 64) -> bytes:
    """A small PNG of a preprocessed image (what the detector saw), for the dashboard."""
    pil = Image.fromarray(img)
    if max(pil.size) > size:
        pil.thumbnail((size, size))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


class StreamRecorder:
    """Scores, monitors and records named streams in a :class:`~discopatch.monitoring.store.Store`."""

    def __init__(
        self,
        detector: Detector,
        store: Store,
        config: DriftConfig | None = None,
        alerts: AlertDispatcher | None = None,
        thumbnails: str = "flagged",
        thumbnail_size: int = 64,
        max_decodes: int = MAX_DECODES,
    ) -> None:
        if thumbnails not in THUMBNAILS:
            raise ConfigError(f"thumbnails must be one of {THUMBNAILS}, got {thumbnails!r}")
        self.scorer = Scorer(detector, max_decodes)
        self.detector = detector
        self.calibration = self.scorer.calibration
        self.store = store
        self.config = config or DriftConfig()
        self.alerts = alerts or AlertDispatcher()
        self.thumbnails = thumbnails
        self.thumbnail_size = thumbnail_size
        self._monitors: dict[str, DriftMonitor] = {}
        #: The stream's image count that each cached monitor's state belongs to (the version checked on write).
        self._versions: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        #: Why the last write failed, until a write or the readiness probe succeeds again (``/healthz``: 503).
        self.last_write_error: str | None = None
        #: Every failed database operation, counted for ``/metrics`` and logged (rate-limited).
        self.failures = DbFailures()
        DriftMonitor(self.calibration, self.config)  # validate and warm the CUSUM threshold cache now

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def _monitor(self, name: str) -> DriftMonitor:
        """The stream's monitor, resumed from the database on first use (call with the stream lock held)."""
        mon = self._monitors.get(name)
        if mon is None:
            mon = DriftMonitor(self.calibration, self.config)
            cfg = self.config
            state, window, n = self.store.load_stream_version(name, cfg.window_size, cfg.window_seconds)
            if not mon.restore(state, window):
                log.warning("stream %s was recorded under another calibration: its drift state starts afresh", name)
            self._monitors[name], self._versions[name] = mon, n
        return mon

    def _check_version(self, name: str, n_images: int) -> None:
        """Drop the cached monitor if the database holds images it has not seen (call with the stream lock held)."""
        if name in self._monitors and self._versions.get(name) != n_images:
            log.warning("stream %s was written by another process: its drift state is reloaded from the database", name)
            self._monitors.pop(name)

    def write_failed(self, name: str, e: BaseException, n_images: int) -> None:
        """Make a failed write of ``n_images`` to stream ``name`` show: counted, logged and reported as unhealthy."""
        what = f"could not record {n_images} images in stream {name}"
        self.last_write_error = f"{what}: {self.failures.failed('write', name, e, what)}"

    def replay(self, name: str, key: str, fingerprint: str) -> dict[str, Any] | None:
        """The response of the request recorded in stream ``name`` under ``key``, or None if there is none.

        Raises :class:`KeyReused` if that request's payload digest is not ``fingerprint``. The look-up is the first
        step of a write, so a database failure in it counts as a failed write.
        """
        try:
            done = self.store.request(name, key)
        except SQLAlchemyError as e:
            self.write_failed(name, e, 0)
            raise
        return None if done is None else self._replayed(done, fingerprint)

    @staticmethod
    def _replayed(done: StoredRequest, fingerprint: str) -> dict[str, Any]:
        if done.fingerprint != fingerprint:
            raise KeyReused(
                f"idempotency key {done.key!r} was already used in this stream for a different payload "
                "(other images or source ids); use a new key for a new request"
            )
        out = dict(done.response)
        out["results"] = [r | {"id": i, "seq": q} for r, (i, q) in zip(out["results"], done.image_ids)]
        return out

    def record(
        self,
        name: str,
        items: list[Item],
        scored: tuple[list[dict[str, Any]], dict[int, Explanation]] | None = None,
        *,
        key: str | None = None,
        fingerprint: str | None = None,
    ) -> dict[str, Any]:
        """Score ``items``, add them to stream ``name`` and commit; returns results and the drift verdict.

        ``scored`` is ``self.scorer.score(items)`` when the caller already ran it (the server bounds its time).
        Images that keep a thumbnail (``thumbnails``) keep their explanation as well, for their heat map.
        With an idempotency ``key`` already recorded in the stream, the stored response is returned (``replayed``
        true) and nothing is recorded or changed; :class:`KeyReused` if the images differ from that request's.
        ``fingerprint`` is ``payload_fingerprint(items)`` when the caller already computed it.

        A database error (or :class:`~discopatch.monitoring.store.StreamConflict` after :data:`MAX_RESYNC` reloads)
        anywhere in the write, a stream's first included, is counted, logged and kept in ``last_write_error``.
        """
        try:
            return self._record(name, items, scored, key=key, fingerprint=fingerprint)
        except (SQLAlchemyError, StreamConflict) as e:
            self.write_failed(name, e, len(items))
            raise

    def _record(
        self,
        name: str,
        items: list[Item],
        scored: tuple[list[dict[str, Any]], dict[int, Explanation]] | None,
        *,
        key: str | None,
        fingerprint: str | None,
    ) -> dict[str, Any]:
        check_stream_name(name)
        if key is not None:
            check_idempotency_key(key)
            fingerprint = fingerprint or payload_fingerprint(items)
            stored = self.store.request(name, key)  # before scoring, which a replay does not need
            done = None if stored is None else self._replayed(stored, fingerprint)
            if done is not None:
                return done | {"replayed": True}
        results, explained = self.scorer.score(items) if scored is None else scored
        model = {"model_id": self.detector.detector_id}
        for r in results:
            make_storable(r)
        thumbs, maps = self._kept_views(results, explained)
        with self._lock(name):
            for attempt in range(MAX_RESYNC + 1):
                mon = self._monitor(name).copy()
                version = self._versions[name]
                now = time.time()
                verdict = mon.update([r["score"] for r in results if r["score"] is not None], now)
                rows = [
                    {"time": now, **{k: r[k] for k in ("source_id", *STORED_VALUES)},
                     "thumbnail": thumbs.get(r["index"]), "explanation": maps.get(r["index"])}
                    for r in results
                ]  # fmt: skip
                alerts = [self._alert(name, verdict, now)] if verdict["transition"] else []
                request = None
                if key is not None:
                    body = {"stream": name, "results": [dict(r) for r in results], "drift": verdict, **model}
                    request = StoredRequest(key, fingerprint or "", body)
                try:
                    ids = self.store.record(name, rows, mon.state(), alerts, expected_n=version, request=request)
                except AlreadyRecorded as e:  # a concurrent retry (in this process or another) was recorded first
                    return self._replayed(e.request, fingerprint or "") | {"replayed": True}
                except StreamConflict:
                    # a second writer on this stream: recompute from what the database holds, never overwrite it
                    self._check_version(name, -1)
                    if attempt == MAX_RESYNC:
                        raise
                    continue
                break
            self.last_write_error = None
            self._monitors[name], self._versions[name] = mon, version + len(rows)
        for r, (image_id, seq) in zip(results, ids):
            r["id"], r["seq"] = image_id, seq
        for a in alerts:
            a["seq"] = ids[-1][1] if ids else None
            self.alerts.send(a)
        return {"stream": name, "results": results, "drift": verdict, **model, "replayed": False}

    def _kept_views(
        self, results: list[dict[str, Any]], explained: dict[int, Explanation]
    ) -> tuple[dict[int, bytes], dict[int, dict[str, Any]]]:
        """Thumbnails of the images ``thumbnails`` keeps, by result index, and their explanations.

        A kept image keeps its explanation too (corners and contributions of the full-size preprocessed image), so
        its heat map is exact even where the thumbnail is smaller than what the detector saw."""
        thumbs: dict[int, bytes] = {}
        maps: dict[int, dict[str, Any]] = {}
        for r in results:
            e = explained.get(r["index"])
            if (
                e is not None
                and r["score"] is not None
                and (self.thumbnails == "all" or (self.thumbnails == "flagged" and r["is_ood"]))
            ):
                thumbs[r["index"]] = thumbnail_png(e.image, self.thumbnail_size)
                maps[r["index"]] = e.to_dict()
        return thumbs, maps

    @staticmethod
    def _alert(name: str, verdict: dict[str, Any], now: float) -> dict[str, Any]:
        kind = verdict["transition"]
        tests = verdict["drifting_tests"]
        rate = verdict["alarm_rate"]
        msg = (
            f"drift in stream {name}: {', '.join(tests)}"
            if kind == "drift"
            else f"stream {name} is back to in-distribution"
        )
        if rate is not None:
            msg += f" (window alarm rate {rate:.1%} over {verdict['n_window']} images)"
        detail = {k: v for k, v in verdict.items() if k not in ("meta", "transition")} | {"message": msg}
        return {
            "stream": name,
            "kind": kind,
            "time": now,
            "tests": tests,
            "p_val": verdict["p_val"],
            "alarm_rate": rate,
            "message": msg,
            "detail": detail,
        }

    def status(self, name: str) -> dict[str, Any]:
        """Window statistics and verdict now (a time window ages even without new images); 404s as StreamNotFound."""
        with self._lock(name):
            info = self.store.stream_info(name)
            self._check_version(name, info["n_images"])
            verdict = self._monitor(name).result(now=time.time())
        return {"stream": name, "n_recorded": info["n_images"], "n_alerts": self.store.count_alerts(name), **verdict}

    def summaries(self, limit: int, after: str | None = None) -> list[dict[str, Any]]:
        """:meth:`status` of up to ``limit`` streams by name after ``after``: one query for the page's counts, and
        the database again only for a stream whose monitor is not loaded or was written by another process."""
        out = []
        for info in self.store.stream_page(limit, after):
            name = info["name"]
            with self._lock(name):
                self._check_version(name, info["n_images"])
                verdict = self._monitor(name).result(now=time.time())
            out.append({"stream": name, "n_recorded": info["n_images"], "n_alerts": info["n_alerts"], **verdict}
                       | {"updated": info["updated"]})  # fmt: skip
        return out

    def window_scores(self, name: str) -> np.ndarray:
        """The scores in the stream's drift window now, oldest first; 404s as StreamNotFound."""
        with self._lock(name):
            info = self.store.stream_info(name)
            self._check_version(name, info["n_images"])
            return self._monitor(name).window_scores(now=time.time())

    def monitors(self) -> dict[str, DriftMonitor]:
        """Every stream in the database with its monitor (loading those not used since start-up)."""
        out = {}
        for s in self.store.streams():
            with self._lock(s["name"]):
                self._check_version(s["name"], s["n_images"])
                out[s["name"]] = self._monitor(s["name"])
        return out

    def close(self) -> None:
        self.scorer.close()
        self.alerts.close()
        self.store.close()
