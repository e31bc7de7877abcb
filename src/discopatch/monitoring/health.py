"""Database failures made visible: counted by operation and reason (for ``/metrics``) and logged, rate-limited.

During an outage every request fails the same way; one ERROR line per failure would flood the log, a line only
for some kinds of failure hid the others. :class:`DbFailures` counts every failure and logs the first one of each
(operation, stream, reason) at once, then at most one line per ``interval_s`` that also says how many were not
logged since.
"""

from __future__ import annotations

import logging
import threading
import time

from .store import StreamConflict, db_error_cause

log = logging.getLogger("discopatch.monitoring")

#: Seconds between two log lines for the same (operation, stream, reason).
LOG_INTERVAL_S = 10.0


def failure_reason(e: BaseException) -> str:
    """A short, bounded label for a database error: the SQLAlchemy class (``OperationalError``, ``IntegrityError``,
    ...) or ``conflict`` for a write that other writers kept pre-empting."""
    return "conflict" if isinstance(e, StreamConflict) else type(e).__name__


class DbFailures:
    """Thread-safe counts of failed database operations by ``(operation, reason)`` and their rate-limited log."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}
        self._last: dict[tuple[str, str, str], float] = {}
        self._suppressed: dict[tuple[str, str, str], int] = {}

    def failed(self, operation: str, where: str, e: BaseException, what: str | None = None) -> str:
        """Count and (rate-limited) log one failure of ``operation`` (read or write) on ``where`` (a stream or a
        path); ``what`` says what could not be done. Returns the cause in one line."""
        reason = failure_reason(e)
        cause = str(e) if reason == "conflict" else db_error_cause(e)
        key = (operation, where, reason)
        now = time.monotonic()
        with self._lock:
            self.counts[operation, reason] = self.counts.get((operation, reason), 0) + 1
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return cause
            self._last[key] = now
            skipped = self._suppressed.pop(key, 0)
        more = f" ({skipped} more since the last line)" if skipped else ""
        log.error("%s: %s%s", what or f"database {operation} failed for {where}", cause, more)
        return cause
