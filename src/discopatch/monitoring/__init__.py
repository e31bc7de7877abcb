"""Production monitoring: stream drift detection, persistent history, alerts, an HTTP service and a dashboard.

:mod:`~discopatch.monitoring.drift` needs only numpy and scipy; the other modules need the ``serve`` extra
(``pip install 'discopatch[serve]'``). Nothing is imported eagerly, so ``discopatch --help`` stays fast and works
without the extra.
"""

from __future__ import annotations

from typing import Any

from .choices import DEFAULT_DB_URL, THUMBNAILS

_DRIFT_EXPORTS = ("DriftConfig", "DriftMonitor", "cusum_threshold", "window_tests")
__all__ = ["DEFAULT_DB_URL", "THUMBNAILS", *_DRIFT_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _DRIFT_EXPORTS:
        from . import drift

        return getattr(drift, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
