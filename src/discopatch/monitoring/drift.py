"""Drift detection over a stream of per-image scores, compared with the detector's ID calibration scores.

DisCoPatch scores each image on its own, so a stream can be judged from the scores alone. Three tests answer
three different questions:

``binomial``
    Are more images of the window flagged (``score > threshold``, i.e. ``p_value <= target_fpr``) than the target
    false-positive rate allows? One-sided. By default the count is compared with its *beta-binomial* null: with
    ``n`` calibration scores and the threshold at their ``k``-th smallest, each ID image exceeds it with probability
    ``U ~ Beta(n - k + 1, k)`` shared by the whole window, so the count of ``m`` ID images is
    ``BetaBinomial(m, n - k + 1, k)`` - exact for exchangeable scores. The plain ``Binomial(m, target_fpr)`` null
    (``binomial_method="binomial"``) ignores that the threshold itself is estimated and over-alarms when the
    calibration set is small next to the window.
``ks``
    Has the score distribution moved, in either direction? Two-sample Kolmogorov-Smirnov test of the window's
    scores against the calibration scores (:func:`scipy.stats.ks_2samp`). It also catches shifts that stay under
    the threshold, such as blank frames whose scores are all equal.
``cusum``
    Sequential: a CUSUM of ``-log p`` over every image, ``S_t = max(0, S_{t-1} - log p_t - k)``, alarming when
    ``S_t > h`` (then ``S`` restarts at 0). ``k = -log(theta) / (1 - theta)`` is the reference value of the
    likelihood-ratio CUSUM for p-values ~ ``Beta(theta, 1)`` against uniform ones; ``h`` is chosen so that the
    expected run length between false alarms on ID images equals ``ert``
    (:func:`~discopatch.monitoring.cusum.cusum_threshold`).

The window tests are combined with a Bonferroni correction: the reported ``p_val`` is ``min(1, n_tests * min p)``
and each test is judged at ``p_val_threshold / n_tests``. They are re-evaluated after every update, so over a long
ID stream they alarm more often than ``p_val`` per window; the CUSUM is the test whose false-alarm spacing is set
directly. A CUSUM alarm counts as drift while the alarming image is still in the window.

The output dict uses alibi-detect's keys (``is_drift``, ``p_val``, ``threshold``, ``distance``, ``time``, with
``time`` the number of images seen, as in its online detectors) plus the window's counts and each test's result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time as _time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from scipy import stats

from ..budget import check_monitor_calibration
from ..calibration import Calibration
from ..errors import ConfigError
from .choices import BINOMIAL_METHODS, BinomialMethod
from .cusum import cusum_threshold

TESTS = ("binomial", "ks", "cusum")
WINDOW_TESTS = ("binomial", "ks")
#: The alternative hypothesis of the KS window test, as in ``scipy.stats.ks_2samp``.
KsAlternative = Literal["two-sided", "less", "greater"]
KS_ALTERNATIVES: tuple[KsAlternative, ...] = get_args(KsAlternative)


@dataclass(frozen=True)
class DriftConfig:
    """Parameters of :class:`DriftMonitor`; every field round-trips through JSON (``to_dict`` / ``from_dict``)."""

    window_size: int | None = 200  #: keep at most this many most recent images (None: no count limit)
    window_seconds: float | None = None  #: keep images newer than this many seconds (None: no time limit)
    min_window: int = 30  #: the window tests report nothing below this many images
    p_val: float = 0.001  #: family-wise significance level of the window tests
    tests: tuple[str, ...] = TESTS
    binomial_method: BinomialMethod = "beta-binomial"  #: one of BINOMIAL_METHODS
    ks_alternative: KsAlternative = "two-sided"  #: or "less" / "greater", as in scipy.stats.ks_2samp
    ert: float = 10_000.0  #: expected number of ID images between CUSUM false alarms
    cusum_theta: float = 0.5  #: the CUSUM is tuned to p-values ~ Beta(theta, 1)

    def __post_init__(self) -> None:
        if self.window_size is None and self.window_seconds is None:
            raise ConfigError("a drift window needs window_size, window_seconds or both")
        if self.window_size is not None and self.window_size < 1:
            raise ConfigError(f"window_size must be >= 1, got {self.window_size}")
        if self.window_seconds is not None and not self.window_seconds > 0:
            raise ConfigError(f"window_seconds must be > 0, got {self.window_seconds}")
        if not 0.0 < self.p_val < 1.0:
            raise ConfigError(f"p_val must be in (0, 1), got {self.p_val}")
        unknown = set(self.tests) - set(TESTS)
        if unknown or not self.tests:
            raise ConfigError(f"tests must be a non-empty subset of {TESTS}, got {self.tests}")
        if self.binomial_method not in BINOMIAL_METHODS:
            raise ConfigError(f"binomial_method must be 'beta-binomial' or 'binomial', got {self.binomial_method!r}")
        if self.ks_alternative not in KS_ALTERNATIVES:
            raise ConfigError(f"ks_alternative must be two-sided, less or greater, got {self.ks_alternative!r}")
        if not 0.0 < self.cusum_theta < 1.0:
            raise ConfigError(f"cusum_theta must be in (0, 1), got {self.cusum_theta}")
        if not self.ert > 1.0:
            raise ConfigError(f"ert must be > 1, got {self.ert}")
        object.__setattr__(self, "tests", tuple(t for t in TESTS if t in self.tests))

    @property
    def cusum_k(self) -> float:
        """Reference value of the CUSUM: the LLR of Beta(theta, 1) vs uniform p-values, scaled to ``-log p``."""
        return -math.log(self.cusum_theta) / (1.0 - self.cusum_theta)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tests"] = list(self.tests)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        if "tests" in kw:
            kw["tests"] = tuple(kw["tests"])
        return cls(**kw)


# ---------------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------------------
# Window tests (usable on any batch of scores)
# ---------------------------------------------------------------------------------------------------------------


def _expected_alarm_rate(cal: Calibration) -> tuple[float, int]:
    """(null probability that an ID image is flagged, rank k of the threshold among the calibration scores)."""
    n = cal.n
    k = math.ceil((n + 1) * (1.0 - cal.target_fpr))
    return (n - k + 1) / (n + 1.0) if k <= n else 0.0, k


def window_tests(
    scores: Sequence[float] | np.ndarray, calibration: Calibration, config: DriftConfig | None = None
) -> dict[str, dict[str, Any]]:
    """Binomial and KS tests of one window of scores against the calibration; ``{test: result}``.

    Each result has ``is_drift``, ``p_val``, ``threshold`` (the Bonferroni-adjusted level) and ``distance``.
    Below ``config.min_window`` scores the p-values are ``None`` and nothing is declared.
    """
    cfg = config or DriftConfig()
    s = np.asarray(scores, dtype=np.float64)
    active = [t for t in cfg.tests if t in WINDOW_TESTS]
    level = cfg.p_val / max(len(active), 1)
    enough = s.size >= cfg.min_window
    out: dict[str, dict[str, Any]] = {}
    if "binomial" in active:
        n_flag = int(np.count_nonzero(calibration.is_ood(s)))
        rate0, k = _expected_alarm_rate(calibration)
        p: float | None = None
        if enough:
            if rate0 == 0.0:
                p = 1.0
            elif cfg.binomial_method == "binomial":
                p = float(stats.binomtest(n_flag, s.size, calibration.target_fpr, alternative="greater").pvalue)
            else:
                p = float(stats.betabinom.sf(n_flag - 1, s.size, calibration.n - k + 1, k))
        rate = n_flag / s.size if s.size else 0.0
        out["binomial"] = {
            "is_drift": p is not None and p <= level,
            "p_val": p,
            "threshold": level,
            "distance": rate - rate0,
            "n_flagged": n_flag,
            "alarm_rate": rate,
            "expected_alarm_rate": rate0,
            "method": cfg.binomial_method,
        }
    if "ks" in active:
        p = dist = None
        if enough:
            res = stats.ks_2samp(s, calibration.scores, alternative=cfg.ks_alternative)
            p, dist = float(res.pvalue), float(res.statistic)
        out["ks"] = {
            "is_drift": p is not None and p <= level,
            "p_val": p,
            "threshold": level,
            "distance": dist,
            "alternative": cfg.ks_alternative,
        }
    return out


def calibration_fingerprint(calibration: Calibration) -> str:
    """Short hash of the calibration, so a stream resumed under another detector starts afresh."""
    h = hashlib.sha256(np.ascontiguousarray(calibration.scores, dtype=np.float64).tobytes())
    h.update(repr((calibration.target_fpr, calibration.threshold)).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# The stream monitor
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Obs:
    t: int
    time: float
    score: float
    p_value: float
    flagged: bool


class DriftMonitor:
    """Sliding-window and sequential drift detection for one stream of scores.

    Example::

        mon = DriftMonitor(det.calibration, DriftConfig(window_size=200, ert=5000))
        for batch in batches:
            verdict = mon.update(det.score(batch))
            if verdict["transition"] == "drift":
                ...
    """

    def __init__(self, calibration: Calibration, config: DriftConfig | None = None) -> None:
        self.calibration = calibration
        self.config = config or DriftConfig()
        check_monitor_calibration(calibration, self.config.cusum_k if "cusum" in self.config.tests else None)
        self.fingerprint = calibration_fingerprint(calibration)
        self.cusum_h = (
            cusum_threshold(float(self.config.ert), self.config.cusum_k, calibration.n)
            if "cusum" in self.config.tests
            else None
        )
        self.reset()

    def reset(self) -> None:
        """Forget the window and the CUSUM (as after a model change)."""
        self._window: deque[_Obs] = deque()
        self.t = 0
        self.cusum = 0.0
        self.n_alarms = 0
        self.last_alarm_t: int | None = None
        self.last_alarm_time: float | None = None
        self.in_drift = False
        self.last_time: float | None = None

    # ------------------------------------------------------------------ updating
    def update(
        self, scores: Sequence[float] | np.ndarray, times: Sequence[float] | np.ndarray | float | None = None
    ) -> dict[str, Any]:
        """Add scores (in arrival order) and return the verdict; ``transition`` says whether drift began or ended.

        ``times`` are epoch seconds, one per score or one for all (default: now).
        """
        s = np.asarray(scores, dtype=np.float64).ravel()
        stamp = _time.time() if times is None else times
        if np.ndim(stamp) == 0:
            latest = float(stamp)  # type: ignore[arg-type]
            t_arr = np.full(s.size, latest)
        else:
            t_arr = np.asarray(stamp, dtype=np.float64).ravel()
            if t_arr.size != s.size:
                raise ConfigError(f"{s.size} scores but {t_arr.size} times")
            latest = float(t_arr.max()) if t_arr.size else _time.time()
        if not np.all(np.isfinite(s)):
            raise ConfigError("scores must be finite")
        p = self.calibration.p_values(s)
        flags = self.calibration.is_ood(s)
        k, h = self.config.cusum_k, self.cusum_h
        for score, pv, fl, tm in zip(s, p, flags, t_arr):
            self.t += 1
            self._window.append(_Obs(self.t, float(tm), float(score), float(pv), bool(fl)))
            if h is not None:
                self.cusum = max(0.0, self.cusum - math.log(pv) - k)
                if self.cusum > h:
                    self.n_alarms += 1
                    self.last_alarm_t, self.last_alarm_time = self.t, float(tm)
                    self.cusum = 0.0
        self.last_time = latest if self.last_time is None else max(self.last_time, latest)
        self._evict(self.last_time)
        result = self.result()
        was, self.in_drift = self.in_drift, bool(result["is_drift"])
        result["transition"] = None if was == self.in_drift else ("drift" if self.in_drift else "recovered")
        return result

    def _evict(self, now: float | None) -> None:
        w = self._window
        if self.config.window_size is not None:
            while len(w) > self.config.window_size:
                w.popleft()
        if self.config.window_seconds is not None and now is not None:
            cutoff = now - self.config.window_seconds
            while w and w[0].time < cutoff:
                w.popleft()

    def _current(self, now: float | None) -> list[_Obs]:
        if now is None or self.config.window_seconds is None:
            return list(self._window)
        cutoff = now - self.config.window_seconds
        return [o for o in self._window if o.time >= cutoff]

    # ------------------------------------------------------------------ reporting
    def window_scores(self, now: float | None = None) -> np.ndarray:
        """The scores in the window (as :meth:`result` sees it at ``now``), oldest first."""
        window = self._current(now)
        return np.fromiter((o.score for o in window), np.float64, len(window))

    def result(self, now: float | None = None) -> dict[str, Any]:
        """The verdict for the current window; ``now`` (epoch seconds) ages a time window without new images."""
        cfg = self.config
        window = self._current(now)
        scores = np.fromiter((o.score for o in window), np.float64, len(window))
        per_test: dict[str, dict[str, Any]] = window_tests(scores, self.calibration, cfg)
        n_flag = sum(o.flagged for o in window)
        if self.cusum_h is not None:
            in_window = self.last_alarm_t is not None and self.t - self.last_alarm_t < len(window)
            per_test["cusum"] = {
                "is_drift": bool(in_window),
                "p_val": None,
                "threshold": self.cusum_h,
                "distance": self.cusum,
                "ert": cfg.ert,
                "k": cfg.cusum_k,
                "n_alarms": self.n_alarms,
                "last_alarm": self.last_alarm_t,
                "last_alarm_time": self.last_alarm_time,
            }
        window_p = [r["p_val"] for name, r in per_test.items() if name in WINDOW_TESTS and r["p_val"] is not None]
        n_wt = sum(name in WINDOW_TESTS for name in per_test)
        p_val = min(1.0, n_wt * min(window_p)) if window_p else None
        drifting = [name for name, r in per_test.items() if r["is_drift"]]
        rate0, _ = _expected_alarm_rate(self.calibration)
        return {
            "is_drift": bool(drifting),
            "p_val": p_val,
            "threshold": cfg.p_val,
            "distance": per_test.get("ks", {}).get("distance"),
            "time": self.t,
            "timestamp": self.last_time,
            "n_window": len(window),
            "n_flagged": int(n_flag),
            "alarm_rate": n_flag / len(window) if window else None,
            "expected_alarm_rate": rate0,
            "target_fpr": self.calibration.target_fpr,
            "score_threshold": self.calibration.threshold,
            "tests": list(per_test),
            "drifting_tests": drifting,
            "per_test": per_test,
            "window": {
                "size": cfg.window_size,
                "seconds": cfg.window_seconds,
                "start": window[0].time if window else None,
                "end": window[-1].time if window else None,
                "first": window[0].t if window else None,
            },
            "meta": {"name": "DisCoPatchStreamDrift", "detector_type": "drift", "online": True, **cfg.to_dict()},
        }

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """JSON-ready sequential state; the window itself is rebuilt from stored scores by :meth:`restore`."""
        return {
            "t": self.t,
            "cusum": self.cusum,
            "n_alarms": self.n_alarms,
            "last_alarm_t": self.last_alarm_t,
            "last_alarm_time": self.last_alarm_time,
            "in_drift": self.in_drift,
            "last_time": self.last_time,
            "fingerprint": self.fingerprint,
        }

    def copy(self) -> DriftMonitor:
        """An independent copy (sharing the read-only calibration), so a caller can update it and keep the
        original if persisting the update fails."""
        new = object.__new__(DriftMonitor)
        new.__dict__.update(self.__dict__)
        new._window = deque(self._window)
        return new

    def restore(self, state: dict[str, Any], window: Sequence[tuple[float, float]]) -> bool:
        """Resume from :meth:`state` and the stream's latest scored ``(time, score)`` rows, oldest first.

        Returns False (and starts afresh) when the state was written under another calibration, because
        old scores are then not comparable with the new threshold.
        """
        self.reset()
        if not state:
            return True
        if state.get("fingerprint") != self.fingerprint:
            return False
        self.t = int(state["t"])
        self.cusum = float(state["cusum"])
        self.n_alarms = int(state["n_alarms"])
        self.last_alarm_t = state.get("last_alarm_t")
        self.last_alarm_time = state.get("last_alarm_time")
        self.in_drift = bool(state.get("in_drift", False))
        self.last_time = state.get("last_time")
        rows = list(window)[-self.t :] if self.t else []
        if rows:
            s = np.array([r[1] for r in rows], dtype=np.float64)
            p, f = self.calibration.p_values(s), self.calibration.is_ood(s)
            first = self.t - len(rows) + 1
            self._window.extend(
                _Obs(first + i, float(r[0]), float(r[1]), float(pv), bool(fl))
                for i, (r, pv, fl) in enumerate(zip(rows, p, f))
            )
        self._evict(self.last_time)
        return True
