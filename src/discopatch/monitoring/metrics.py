"""The service's Prometheus metrics (prometheus-client): one registry per app, request/image counters and
histograms, and the per-stream drift gauges read from the recorder at each scrape."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from .._version import __version__
from .streams import StreamRecorder

#: Media type of :meth:`Metrics.render` (the Prometheus text exposition format, version 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Calibration-score quantiles used as the score histogram's bucket bounds (the threshold is added to them).
SCORE_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def score_buckets(calibration: Any) -> tuple[float, ...]:
    """Bucket bounds at quantiles of the ID calibration scores plus the threshold, so they fit any score scale: on
    ID traffic each bucket holds about its quantile's share, and the ``le=threshold`` bucket counts unflagged images."""
    bounds = {float(q) for q in np.quantile(calibration.scores, SCORE_QUANTILES)} | {float(calibration.threshold)}
    return tuple(sorted(b for b in bounds if np.isfinite(b)))


class _StreamCollector:
    """Per-stream drift gauges and the inference-time counter, read from the recorder at each scrape."""

    def __init__(self, recorder: StreamRecorder) -> None:
        self.recorder = recorder

    def describe(self) -> list[Any]:
        return []  # families are known only at scrape time; nothing to check for duplicates at registration

    def collect(self) -> Iterator[Any]:
        yield CounterMetricFamily(
            "discopatch_inference_seconds",
            "Time spent in model inference.",
            value=self.recorder.scorer.inference_seconds,
        )
        failures = CounterMetricFamily(
            "discopatch_database_failures",
            "Failed database operations (write: a request's rows not recorded; read; probe: /readyz or /healthz), "
            "by operation and reason (the SQLAlchemy error class, or conflict).",
            labels=["operation", "reason"],
        )
        up = 1.0
        try:  # the per-stream gauges need the database: during an outage the scrape still answers, without them
            monitors = self.recorder.monitors()
        except SQLAlchemyError as e:
            self.recorder.failures.failed("read", "/metrics", e)
            monitors, up = {}, 0.0
        for (operation, reason), count in sorted(self.recorder.failures.counts.items()):
            failures.add_metric([operation, reason], count)
        yield failures
        yield GaugeMetricFamily(
            "discopatch_database_up", "1 when this scrape could read the streams from the database, else 0.", value=up
        )
        now = time.time()
        results = {name: mon.result(now=now) for name, mon in monitors.items()}
        per_stream = {
            "discopatch_stream_images": ("Scored images seen by the stream's drift monitor.", "time"),
            "discopatch_stream_window_images": ("Images in the drift window.", "n_window"),
            "discopatch_stream_window_flagged": ("Flagged images in the drift window.", "n_flagged"),
            "discopatch_stream_alarm_rate": ("Share of flagged images in the window.", "alarm_rate"),
            "discopatch_stream_drift": ("1 while the stream is in drift.", "is_drift"),
            "discopatch_stream_p_value": ("Combined p-value of the window tests.", "p_val"),
        }
        for metric, (help_, key) in per_stream.items():
            g = GaugeMetricFamily(metric, help_, labels=["stream"])
            for n, r in results.items():
                g.add_metric([n], math.nan if r[key] is None else float(r[key]))
            yield g
        cusum = GaugeMetricFamily(
            "discopatch_stream_cusum", "CUSUM statistic of -log p (alarm above the threshold).", labels=["stream"]
        )
        h = GaugeMetricFamily(
            "discopatch_stream_cusum_threshold", "CUSUM alarm threshold for the configured ERT.", labels=["stream"]
        )
        alarms = CounterMetricFamily(
            "discopatch_stream_cusum_alarms", "CUSUM alarms since the stream began.", labels=["stream"]
        )
        for n, m in monitors.items():
            cusum.add_metric([n], m.cusum)
            h.add_metric([n], math.nan if m.cusum_h is None else m.cusum_h)  # None: the CUSUM test is off
            alarms.add_metric([n], m.n_alarms)
        yield from (cusum, h, alarms)


class Metrics:
    """The app's Prometheus metrics in its own :class:`~prometheus_client.CollectorRegistry` (never the global one,
    so several apps in one process keep separate counts)."""

    def __init__(self, recorder: StreamRecorder) -> None:
        det = recorder.detector
        self.registry = r = CollectorRegistry()
        Info("discopatch", "Version and model of this server.", registry=r).info(
            {
                "version": __version__,
                "preset": det.preset.name,
                "n_patches": str(det.n_patches),
                "model_id": det.detector_id or "",
            }
        )
        self.requests = Counter(
            "discopatch_http_requests", "HTTP requests by route, method and status.", ["route", "method", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "discopatch_http_request_duration_seconds", "HTTP request latency.", ["route"], buckets=BUCKETS, registry=r
        )
        self.in_flight = Gauge(
            "discopatch_http_requests_in_flight", "HTTP requests being served (a scrape counts itself).", registry=r
        )
        self.images = Counter(
            "discopatch_images", "Images scored, by outcome (id, ood, error).", ["outcome"], registry=r
        )
        for outcome in ("id", "ood", "error"):
            self.images.labels(outcome)
        self.scores = Histogram(
            "discopatch_score",
            "Scores of the scored images; bucket bounds are quantiles of the calibration scores and the threshold.",
            buckets=score_buckets(det.calibration),
            registry=r,
        )
        r.register(_StreamCollector(recorder))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_images(self, results: list[dict[str, Any]]) -> None:
        for res in results:
            self.images.labels("error" if res["error"] else "ood" if res["is_ood"] else "id").inc()
            if res["score"] is not None:
                self.scores.observe(res["score"])

    def render(self) -> bytes:
        return generate_latest(self.registry)
