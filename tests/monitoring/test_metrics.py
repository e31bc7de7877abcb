"""The per-stream drift gauges of /metrics, read from a stub recorder (no server)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from discopatch.calibration import Calibration
from discopatch.monitoring.drift import DriftConfig, DriftMonitor
from discopatch.monitoring.health import DbFailures

prometheus_client = pytest.importorskip("prometheus_client")


def test_scrape_with_the_cusum_test_off() -> None:
    """A stream without the CUSUM test has no threshold: its gauge reads NaN (None used to break the whole scrape)."""
    from prometheus_client.parser import text_string_to_metric_families

    from discopatch.monitoring.metrics import _StreamCollector

    cal = Calibration.from_scores(np.random.default_rng(0).normal(size=199), 0.05)
    monitors = {
        "plain": DriftMonitor(cal, DriftConfig(tests=("binomial", "ks"))),
        "cusum": DriftMonitor(cal, DriftConfig(tests=("cusum",))),
    }
    recorder = SimpleNamespace(
        scorer=SimpleNamespace(inference_seconds=0.0), monitors=lambda: monitors, failures=DbFailures()
    )
    registry = prometheus_client.CollectorRegistry()
    registry.register(_StreamCollector(recorder))
    text = prometheus_client.generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    h = {s.labels["stream"]: s.value for s in families["discopatch_stream_cusum_threshold"].samples}
    assert np.isnan(h["plain"])
    assert h["cusum"] == pytest.approx(monitors["cusum"].cusum_h)
