"""Thread-safe, fair, cancellable scoring of a request's images: the part of the service that takes memory and CPU.

Decoding runs on a pool of ``max_decodes`` threads shared by all callers (decoding is what takes memory, up to about
two decoded images' worth each, see docs/RELIABILITY.md, so N concurrent requests must not multiply it); a call
keeps at most ``max_decodes - 1`` of its images queued or running, so one large request never holds the whole pool
(no head-of-line blocking). Inference holds one lock (a PyTorch model is not safe to share between threads and two
forward passes would only compete for the same cores), taken per chunk of images so requests interleave.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import Calibration
from ..data.images import preprocess_many
from ..detector import Detector
from ..detector_scoring import Decoded
from ..errors import ConfigError, NotFittedError
from ..inference.explain import Explanation

#: Images decoded and preprocessed at once by one :class:`Scorer` (``serve --max-decodes``).
MAX_DECODES = 2
#: Images scored per forward pass under the inference lock: a large request lets others' inference in between.
INFER_CHUNK = 16


class Cancelled(RuntimeError):
    """The caller cancelled :meth:`Scorer.score` (its request timed out or its client went away)."""


@dataclass
class Item:
    """One input: ``data`` (encoded bytes or a file path) or an ``error`` found before decoding."""

    source_id: str | None
    data: bytes | str | Path | None = None
    error: str | None = None


class Scorer:
    """Thread-safe per-image scoring: each image's score is independent of what it is submitted with.

    ``max_decodes`` bounds how many images are decoded at once across all callers, which bounds memory: one
    decode may need about two decoded images' worth (``MAX_DECODE_BYTES`` for the source plus its 8-bit copy).
    The decodes run on a pool of that many threads rather than under a semaphore in the callers' threads: glibc
    keeps freed memory in a per-thread arena, so 4 request threads each decoding in turn kept 4 decodes' worth.
    """

    def __init__(self, detector: Detector, max_decodes: int = MAX_DECODES) -> None:
        if detector.calibration is None:
            raise NotFittedError("the detector is not calibrated: monitoring needs its threshold and p-values")
        if max_decodes < 1:
            raise ConfigError(f"max_decodes must be at least 1, got {max_decodes}")
        self.detector = detector
        self.calibration: Calibration = detector.calibration
        self.max_decodes = max_decodes
        #: Decodes one call may have queued or running at once: all but one of the pool's threads, so that a
        #: single large request leaves a thread for the next request (all of them when the pool has one).
        self.share = max(1, max_decodes - 1)
        self._decoder = ThreadPoolExecutor(max_decodes, thread_name_prefix="discopatch-decode")
        self._lock = threading.Lock()
        self.inference_seconds = 0.0
        self.inference_batches = 0

    def score(
        self, items: list[Item], cancel: threading.Event | None = None
    ) -> tuple[list[dict[str, Any]], dict[int, Explanation]]:
        """Per item ``{index, source_id}`` and its :data:`~discopatch.row_layout.VALUE_COLUMNS` (``d_score`` for
        fused and statistics-only detectors); also each scored item's explanation.

        Decoding runs on the shared pool, at most :attr:`share` of this call's images queued or running at a time,
        so another request's images wait behind a few of these, not behind all of them (no head-of-line blocking).
        Scoring is :meth:`~discopatch.detector.Detector.score_decoded` with explanations, which gives the score and
        D's per-patch contributions in one forward pass, so a heat map never needs a second pass; it runs in chunks
        of :data:`INFER_CHUNK` images, so other requests' inference interleaves. Setting ``cancel`` (the request
        timed out or its client went away) stops the call at the next decode or chunk: its queued decodes are
        dropped and :class:`Cancelled` is raised. The explanations (by item index) hold the preprocessed images.
        """
        decoded = self._decode_all(items, cancel)
        names = [it.source_id or f"images[{i}]" for i, it in enumerate(items)]
        scored = []
        for start in range(0, len(items), INFER_CHUNK):
            _check(cancel)
            part = slice(start, start + INFER_CHUNK)
            with self._lock:
                t0 = time.perf_counter()
                scored += self.detector.score_decoded(names[part], decoded[part], explain=True)
                if any(img is not None for img, _ in decoded[part]):
                    self.inference_seconds += time.perf_counter() - t0
                    self.inference_batches += 1
        with_d = self.detector.preset.score_mode != "d-only"
        results = [
            {"index": i, "source_id": it.source_id} | r.values(with_d) for i, (it, r) in enumerate(zip(items, scored))
        ]
        explained = {i: r.explanation for i, r in enumerate(scored) if r.explanation is not None}
        return results, explained

    def _decode_all(self, items: list[Item], cancel: threading.Event | None) -> list[Decoded]:
        """Each item decoded on the pool (:attr:`share` at a time), or its early error; in the items' order."""
        cfg = self.detector.preprocess_config
        out: list[Decoded] = [(None, it.error) for it in items]
        todo = iter([i for i, it in enumerate(items) if it.error is None])
        pending: dict[Future[tuple[np.ndarray | None, str | None]], int] = {}

        def submit_next() -> None:
            i = next(todo, None)
            if i is not None:
                pending[self._decoder.submit(_decode_one, items[i].data, cfg, cancel)] = i

        for _ in range(self.share):
            submit_next()
        try:
            while pending:
                done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                _check(cancel)
                for f in done:
                    i = pending.pop(f)
                    img, err = f.result()
                    if img is None:
                        name = items[i].source_id or f"images[{i}]"
                        err = err.replace("<bytes>", name, 1) if err else f"{name}: unreadable"
                    out[i] = (img, err)
                    submit_next()
        finally:
            for f in pending:  # only after a cancel or an error: drop what has not started
                f.cancel()
        return out

    def close(self) -> None:
        """Stop the decoding threads (queued decodes still finish)."""
        self._decoder.shutdown(wait=False)


def _decode_one(data: Any, cfg: Any, cancel: threading.Event | None = None) -> tuple[np.ndarray | None, str | None]:
    if cancel is not None and cancel.is_set():  # queued before the cancel, started after it: skip the work
        return None, "cancelled"
    _, img, err = next(preprocess_many([data], cfg))
    return img, err


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("the request was cancelled (timed out or its client went away)")
