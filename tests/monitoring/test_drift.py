"""Drift tests on synthetic scores: calibrated false alarms, power on shifts, CUSUM run lengths, windows, state."""

from __future__ import annotations

import numpy as np
import pytest

from discopatch.calibration import Calibration
from discopatch.monitoring.cusum import cusum_arl, cusum_threshold, simulate_run_lengths
from discopatch.monitoring.drift import DriftConfig, DriftMonitor, window_tests

ALIBI_KEYS = {"is_drift", "p_val", "threshold", "distance", "time"}


def _cal(rng: np.random.Generator, n: int = 199, fpr: float = 0.05) -> Calibration:
    return Calibration.from_scores(rng.normal(size=n), fpr)


@pytest.mark.parametrize("test", ["binomial", "ks"])
def test_window_test_false_alarms_near_nominal(test: str) -> None:
    """On ID windows each test fires at about its level (discrete tests a little below it, never far above)."""
    rng = np.random.default_rng(0)
    cfg = DriftConfig(p_val=0.05, tests=(test,), min_window=10)
    fired = [window_tests(rng.normal(size=100), _cal(rng), cfg)[test]["is_drift"] for _ in range(300)]
    assert 0.01 <= np.mean(fired) <= 0.08


def test_beta_binomial_accounts_for_a_small_calibration_set() -> None:
    """With 59 calibration scores and windows of 500, the plain binomial over-alarms; the beta-binomial does not."""
    rng = np.random.default_rng(1)
    plain = DriftConfig(p_val=0.05, tests=("binomial",), binomial_method="binomial")
    exact = DriftConfig(p_val=0.05, tests=("binomial",))
    hits_plain = hits_exact = 0
    for _ in range(300):
        cal, window = _cal(rng, n=59), rng.normal(size=500)
        hits_plain += window_tests(window, cal, plain)["binomial"]["is_drift"]
        hits_exact += window_tests(window, cal, exact)["binomial"]["is_drift"]
    assert hits_exact / 300 <= 0.07
    assert hits_plain / 300 >= 0.15


def test_shifted_scores_are_detected() -> None:
    rng = np.random.default_rng(2)
    mon = DriftMonitor(_cal(rng, n=500), DriftConfig(window_size=100))
    out = mon.update(rng.normal(1.0, 1.0, size=100), times=0.0)
    assert set(out) >= ALIBI_KEYS
    assert out["is_drift"] and out["transition"] == "drift"
    assert {"binomial", "ks"} <= set(out["drifting_tests"])
    assert out["p_val"] < 1e-6 and out["p_val"] <= out["threshold"]
    assert out["n_window"] == 100 and out["n_flagged"] > 20 and out["alarm_rate"] > 0.2
    assert out["distance"] == out["per_test"]["ks"]["distance"] > 0.3


def test_id_stream_has_no_drift() -> None:
    rng = np.random.default_rng(3)
    mon = DriftMonitor(_cal(rng, n=1000), DriftConfig(window_size=200))
    out = mon.update(rng.normal(size=200), times=0.0)
    assert not out["is_drift"] and out["transition"] is None
    assert out["n_window"] == 200 and out["time"] == 200
    assert out["tests"] == ["binomial", "ks", "cusum"]
    assert out["p_val"] > out["threshold"]


@pytest.mark.parametrize("n_calibration", [None, 99])
def test_cusum_threshold_gives_the_requested_run_length(n_calibration: int | None) -> None:
    k = DriftConfig().cusum_k
    h = cusum_threshold(200.0, k, n_calibration)
    lengths = simulate_run_lengths(h, k, n_calibration, n_runs=2000, seed=0)
    assert lengths.mean() == pytest.approx(200.0, rel=0.1)
    assert 200.0 <= cusum_arl(h, k, n_calibration) <= 210.0  # discrete p-values: the run length moves in steps
    assert cusum_threshold(2000.0, k, n_calibration) > h


def test_cusum_false_alarm_spacing_on_an_id_stream() -> None:
    """Through the monitor itself, with real conformal p-values, alarms come about every ERT images."""
    rng = np.random.default_rng(4)
    alarms = []
    for _ in range(4):
        mon = DriftMonitor(_cal(rng, n=999), DriftConfig(ert=250, tests=("cusum",)))
        mon.update(rng.normal(size=10_000), times=0.0)
        alarms.append(mon.n_alarms)
    assert 10_000 * 4 / sum(alarms) == pytest.approx(250, rel=0.3)


def test_cusum_catches_a_partial_shift_quickly() -> None:
    """A stream in which a third of the images turn OOD: the CUSUM alarms within a few dozen images."""
    rng = np.random.default_rng(5)
    mon = DriftMonitor(_cal(rng, n=999), DriftConfig(ert=10_000, tests=("cusum",)))
    mon.update(rng.normal(size=2000), times=0.0)
    before = mon.n_alarms
    shifted = np.where(rng.random(300) < 1 / 3, rng.normal(3.0, 0.5, 300), rng.normal(size=300))
    delay = next((i for i, s in enumerate(shifted, 1) if mon.update([s], times=0.0) and mon.n_alarms > before), None)
    assert delay is not None and delay < 80


def test_window_by_count() -> None:
    rng = np.random.default_rng(6)
    mon = DriftMonitor(_cal(rng), DriftConfig(window_size=50))
    for i in range(12):
        out = mon.update(rng.normal(size=10), times=float(i))
    assert out["n_window"] == 50 and out["time"] == 120
    assert out["window"]["first"] == 71


def test_window_by_time() -> None:
    rng = np.random.default_rng(7)
    mon = DriftMonitor(_cal(rng), DriftConfig(window_size=None, window_seconds=10.0, min_window=3))
    out = mon.update(rng.normal(size=30), times=np.arange(30.0))
    assert out["n_window"] == 11 and out["window"]["start"] == 19.0 and out["window"]["end"] == 29.0
    assert mon.result(now=35.0)["n_window"] == 5
    aged = mon.result(now=100.0)
    assert aged["n_window"] == 0 and aged["p_val"] is None and not aged["is_drift"]


def test_count_and_time_limits_combine() -> None:
    rng = np.random.default_rng(8)
    mon = DriftMonitor(_cal(rng), DriftConfig(window_size=5, window_seconds=100.0, min_window=1))
    assert mon.update(rng.normal(size=30), times=np.arange(30.0))["n_window"] == 5


def test_drift_then_recovery_transitions() -> None:
    rng = np.random.default_rng(9)
    mon = DriftMonitor(_cal(rng, n=500), DriftConfig(window_size=100, tests=("binomial", "ks")))
    assert mon.update(rng.normal(size=100), 0.0)["transition"] is None
    assert mon.update(rng.normal(2.0, 1.0, 60), 1.0)["transition"] == "drift"
    assert mon.update(rng.normal(2.0, 1.0, 10), 2.0)["transition"] is None
    assert mon.update(rng.normal(size=100), 3.0)["transition"] == "recovered"


def test_state_round_trip() -> None:
    rng = np.random.default_rng(10)
    cal, cfg = _cal(rng), DriftConfig(window_size=40, ert=300)
    mon = DriftMonitor(cal, cfg)
    times = np.arange(90.0)
    scores = np.concatenate([rng.normal(size=60), rng.normal(1.5, 1.0, 30)])
    mon.update(scores, times)
    again = DriftMonitor(cal, cfg)
    assert again.restore(mon.state(), list(zip(times, scores)))
    assert again.result() == mon.result()
    assert again.state() == mon.state()


def test_restore_under_another_calibration_starts_afresh() -> None:
    rng = np.random.default_rng(11)
    mon = DriftMonitor(_cal(rng))
    mon.update(rng.normal(size=50), 0.0)
    other = DriftMonitor(_cal(rng))
    assert not other.restore(mon.state(), [(0.0, 0.1)])
    assert other.t == 0 and other.result()["n_window"] == 0


def test_config_validation_and_json() -> None:
    with pytest.raises(ValueError, match="window"):
        DriftConfig(window_size=None, window_seconds=None)
    with pytest.raises(ValueError, match="tests"):
        DriftConfig(tests=("ks", "nope"))
    cfg = DriftConfig(window_size=None, window_seconds=60.0, tests=("cusum", "ks"))
    assert cfg.tests == ("ks", "cusum")
    assert DriftConfig.from_dict(cfg.to_dict()) == cfg
