"""Serverless monitoring: score new files in a folder as they appear, or paths read from standard input.

Same scoring, drift logic and database as ``discopatch serve``. A file's source id is its absolute path; paths
already recorded in the stream are skipped, so a restarted watcher neither rescores nor double-counts. A file is
taken once it has not been modified for ``settle`` seconds, so half-written files are not scored.
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from ..data.images import list_images
from ..row_layout import VALUE_COLUMNS
from .scoring import Item
from .streams import StreamRecorder

log = logging.getLogger("discopatch.monitoring")


class Watcher:
    """Feeds files into one stream of a :class:`StreamRecorder` and reports rows and alerts."""

    def __init__(
        self,
        recorder: StreamRecorder,
        stream: str,
        *,
        batch_size: int = 64,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.recorder = recorder
        self.stream = stream
        self.batch_size = batch_size
        self.out = out
        self.err = err if err is not None else sys.stderr
        self.known = recorder.store.sources(stream)
        self.n_scored = self.n_errors = self.n_skipped = 0

    def process(self, paths: list[Path]) -> None:
        """Score and record the paths not yet in the stream, ``batch_size`` per commit."""
        todo: dict[str, None] = {}  # ordered and de-duplicated
        for p in paths:
            sid = str(Path(p).absolute())
            if sid in self.known or sid in todo:
                self.n_skipped += 1
            else:
                todo[sid] = None
        todo_list = list(todo)
        for start in range(0, len(todo_list), self.batch_size):
            chunk = todo_list[start : start + self.batch_size]
            res = self.recorder.record(self.stream, [Item(sid, data=sid) for sid in chunk])
            self.known.update(chunk)
            for r in res["results"]:
                self.n_errors += r["error"] is not None
                self.n_scored += r["error"] is None
                if self.out is not None:
                    row = {k: r[k] for k in ("source_id", "seq", *VALUE_COLUMNS) if k in r}
                    self.out.write(json.dumps(row) + "\n")
            if self.out is not None:
                self.out.flush()
            d = res["drift"]
            if d["transition"]:
                tests = ", ".join(d["drifting_tests"]) or "-"
                print(f"ALERT {self.stream}: {d['transition']} ({tests}) at image {d['time']}", file=self.err)

    def watch(
        self,
        folder: str | os.PathLike[str],
        *,
        poll: float = 2.0,
        settle: float = 1.0,
        once: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """Poll ``folder`` (recursively) until ``stop`` is set, or one pass with ``once`` (no settling wait)."""
        stop = stop or threading.Event()
        root = Path(folder)
        while True:
            now = time.time()
            ready = []
            for p in list_images(root):
                if str(p.absolute()) in self.known:
                    continue
                try:
                    mtime = p.stat().st_mtime
                except FileNotFoundError:
                    continue
                if once or now - mtime >= settle:
                    ready.append(p)
            if ready:
                self.process(ready)
            if once or stop.wait(poll):
                return

    def read_stream(self, source: TextIO | Iterable[str]) -> None:
        """Paths, one per line, scored in batches of what has arrived (a batch never waits for more input)."""
        lines: Iterable[str] = iter(source.readline, "") if hasattr(source, "readline") else source
        batch: list[Path] = []
        for line in lines:
            path = line.strip()
            if path:
                batch.append(Path(path))
            if len(batch) >= self.batch_size or (batch and not _more_ready(source)):
                self.process(batch)
                batch = []
        if batch:
            self.process(batch)

    def summary(self) -> dict[str, Any]:
        return {"stream": self.stream, "scored": self.n_scored, "errors": self.n_errors, "skipped": self.n_skipped}


def _more_ready(source: object) -> bool:
    """Whether more input is already waiting, so a burst on a pipe is scored as one batch."""
    try:
        fd = source.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return True  # an in-memory source: keep batching until it ends
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False
