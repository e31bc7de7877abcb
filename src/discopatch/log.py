"""The ``discopatch`` logger, its text / JSON formats, and progress that suits where standard error goes.

In a terminal long work shows a tqdm bar; elsewhere (a file, a pipe, a container log) :class:`LogProgress` writes
one log line every :data:`LOG_INTERVAL_S` seconds (``DISCOPATCH_PROGRESS_INTERVAL`` overrides it) and one at the
end, instead of carriage-return frames.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TextIO, get_args

from tqdm.auto import tqdm

from .errors import ConfigError

LOGGER = logging.getLogger("discopatch")
LOG_INTERVAL_S = 5.0
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (epoch seconds), ``level``, ``logger``, ``message`` (+ ``exc_info``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: int = logging.INFO, fmt: LogFormat = "text") -> logging.Logger:
    """Give the ``discopatch`` logger one standard-error handler in ``fmt`` (``text`` or ``json``) at ``level``, and
    route Python warnings through it (:func:`log_warning`), so that they follow ``--log-format`` and the level."""
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"unknown log format {fmt!r}; use text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    for old in list(LOGGER.handlers):
        LOGGER.removeHandler(old)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    LOGGER.propagate = False
    warnings.showwarning = log_warning
    return LOGGER


_SHOW_WARNING = warnings.showwarning


def log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` as a WARNING record of the ``discopatch.warnings`` logger: one line in the run's log
    format (not Python's two-line ``file:line: Category: text`` block that ignored ``--log-format``); a warning
    written to an explicit ``file`` keeps Python's form."""
    if file is not None:
        _SHOW_WARNING(message, category, filename, lineno, file, line)
        return
    LOGGER.getChild("warnings").warning("%s: %s", category.__name__, message)


class LogProgress:
    """The part of tqdm's interface discopatch uses, logging a line every ``interval_s`` seconds and at the end."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        interval_s: float | None = None,
    ) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc or "progress", unit
        self.n = self._start = initial
        env = os.environ.get("DISCOPATCH_PROGRESS_INTERVAL")
        self.interval_s = interval_s if interval_s is not None else float(env) if env else LOG_INTERVAL_S
        self.postfix: dict[str, Any] = {}
        self._t0 = self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        try:
            for x in self.iterable:
                yield x
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, postfix: dict[str, Any]) -> None:
        self.postfix = dict(postfix)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._log("")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._log("done: ")

    def _log(self, prefix: str) -> None:
        elapsed = time.monotonic() - self._t0
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = (self.n - self._start) / elapsed if elapsed > 0 else 0.0
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        LOGGER.info(
            "%s: %s%d%s %s%s in %.1f s, %.3g %s/s%s", self.desc, prefix, self.n, of, self.unit, pct, elapsed, rate,
            self.unit, extra,
        )  # fmt: skip


def progress_bar(iterable: Iterable[Any] | None = None, *, disable: bool = False, **kw: Any) -> Any:
    """tqdm in a terminal, :class:`LogProgress` when standard error is not one, nothing with ``disable``."""
    if disable:
        return tqdm(iterable, disable=True, **kw)
    if sys.stderr.isatty():
        return tqdm(iterable, **kw)
    return LogProgress(iterable, **kw)


def stderr_lines(enabled: bool = True) -> Callable[[str], None]:
    """A function printing one progress line to standard error (flushed), or doing nothing when not ``enabled``:
    the benchmark's and the learning curve's ``[stage] ...`` lines, which are output rather than log records."""

    def write(message: str) -> None:
        if enabled:
            print(message, file=sys.stderr, flush=True)

    return write
