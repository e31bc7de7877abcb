"""The CUSUM's threshold for a required spacing of false alarms: run lengths of a CUSUM of ``-log p`` on null p-values.

:class:`~discopatch.monitoring.drift.DriftMonitor` alarms when ``S_t = max(0, S_{t-1} - log p_t - k)`` exceeds
``h``; :func:`cusum_threshold` picks ``h`` so that the expected run length between false alarms on ID images is the
configured ``ert`` - computed (Brook-Evans Markov chain, :func:`cusum_arl`), not simulated, so a monitor gets it at
start-up; :func:`simulate_run_lengths` checks the computation. p-values are uniform or conformal (``j / (n + 1)``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..budget import cusum_min_calibration
from ..errors import ConfigError


def _null_cdf(x: np.ndarray, n_calibration: int | None) -> np.ndarray:
    """CDF of ``-log p`` under the null: Exp(1) for uniform p, or for a conformal p-value with n calibration scores.

    A conformal p-value of an ID image is ``j / (n + 1)`` with ``j`` uniform on ``1..n+1``.
    """
    x = np.asarray(x, dtype=np.float64)
    cdf: np.ndarray
    if n_calibration is None:
        cdf = np.where(x < 0, 0.0, -np.expm1(-np.maximum(x, 0.0)))
    else:
        m = n_calibration + 1.0
        cdf = np.clip((m + 1.0 - np.ceil(m * np.exp(-np.maximum(x, -50.0)) - 1e-9)) / m, 0.0, 1.0)
    return cdf


def cusum_arl(h: float, k: float, n_calibration: int | None = None, n_states: int = 400) -> float:
    """Average run length from ``S = 0`` to the first ``S > h`` on null p-values (Brook-Evans Markov chain).

    ``[0, h]`` is cut into ``n_states`` cells (the first one holds the reset point 0); the run length is
    ``(I - Q)^-1 1`` at state 0, where ``Q`` are the transition probabilities between non-alarming cells.
    """
    if h <= 0:
        raise ConfigError(f"h must be > 0, got {h}")
    delta = h / (n_states - 0.5)
    centres = np.arange(n_states) * delta
    uppers = (np.arange(n_states) + 0.5) * delta
    cdf = _null_cdf(uppers[None, :] - centres[:, None] + k, n_calibration)
    q = np.diff(cdf, axis=1, prepend=0.0)
    run = np.linalg.solve(np.eye(n_states) - q, np.ones(n_states))
    return float(run[0])


@functools.lru_cache(maxsize=64)
def cusum_threshold(ert: float, k: float, n_calibration: int | None = None, rtol: float = 1e-3) -> float:
    """The smallest CUSUM threshold ``h`` (to ``rtol``) whose null average run length is at least ``ert``.

    Deterministic and fast (milliseconds), so a monitor can compute it at start-up; tests check it against
    :func:`simulate_run_lengths`. The shared calibration set makes p-values of one stream slightly dependent;
    the ERT holds on average over calibration sets.
    """
    if not ert > 1:
        raise ConfigError(f"ert must be > 1, got {ert}")
    if n_calibration is not None and n_calibration < cusum_min_calibration(k):
        raise ConfigError(f"a CUSUM with k={k:.3g} never rises on p-values from {n_calibration} calibration scores")
    lo, hi = 1e-6, 1.0
    a_lo, a_hi = cusum_arl(lo, k, n_calibration), cusum_arl(hi, k, n_calibration)
    if a_lo >= ert:
        raise ConfigError(f"ert={ert} is below the shortest run length reachable with k={k:.3g}")
    while a_hi < ert:
        lo, a_lo, hi = hi, a_hi, hi * 2.0
        if hi > 1e4:
            raise ConfigError(f"no CUSUM threshold reaches ert={ert}")
        a_hi = cusum_arl(hi, k, n_calibration)
    # log ARL is close to linear in h, so interpolate there; the clamp keeps the bracket shrinking.
    while hi - lo > rtol * hi and a_hi > ert * (1 + rtol):
        f = (math.log(ert) - math.log(a_lo)) / (math.log(a_hi) - math.log(a_lo))
        mid = lo + min(max(f, 0.1), 0.9) * (hi - lo)
        a_mid = cusum_arl(mid, k, n_calibration)
        if a_mid < ert:
            lo, a_lo = mid, a_mid
        else:
            hi, a_hi = mid, a_mid
    return hi


def simulate_run_lengths(
    h: float,
    k: float,
    n_calibration: int | None = None,
    n_runs: int = 1000,
    seed: int = 0,
    max_steps: int = 10_000_000,
) -> np.ndarray:
    """Run lengths of ``n_runs`` independent CUSUMs fed null p-values (seeded); for checking :func:`cusum_arl`."""
    rng = np.random.default_rng(seed)
    s = np.zeros(n_runs)
    lengths = np.zeros(n_runs, dtype=np.int64)
    alive = np.arange(n_runs)
    for step in range(1, max_steps + 1):
        if n_calibration is None:
            p = 1.0 - rng.random(alive.size)
        else:
            p = rng.integers(1, n_calibration + 2, alive.size) / (n_calibration + 1.0)
        s[alive] = np.maximum(0.0, s[alive] - np.log(p) - k)
        hit = s[alive] > h
        lengths[alive[hit]] = step
        alive = alive[~hit]
        if alive.size == 0:
            break
    lengths[alive] = max_steps
    return lengths
