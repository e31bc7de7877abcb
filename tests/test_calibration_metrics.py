"""Conformal threshold / p-values and the OOD metrics against hand-checked values."""

from __future__ import annotations

import numpy as np
import pytest

from discopatch.calibration import Calibration
from discopatch.metrics import auroc_ci, format_table, ood_metrics


def test_threshold_and_p_values_agree() -> None:
    cal = Calibration.from_scores(np.arange(1, 100, dtype=float), target_fpr=0.05)  # 99 scores
    assert cal.threshold == 95.0  # ceil(100 * 0.95) = 95th smallest
    s = np.array([94.5, 95.0, 95.5, 200.0, -1.0])
    p = cal.p_values(s)
    np.testing.assert_allclose(p, [(1 + 5) / 100, (1 + 5) / 100, (1 + 4) / 100, 1 / 100, 1.0])
    np.testing.assert_array_equal(cal.is_ood(s), p <= 0.05)


def test_false_positive_rate_is_controlled_on_exchangeable_scores() -> None:
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):
        cal = Calibration.from_scores(rng.normal(size=200), 0.1)
        rates.append(cal.is_ood(rng.normal(size=500)).mean())
    assert abs(np.mean(rates) - 0.1) < 0.01  # conformal: E[FPR] <= 0.1 and close to it


def test_too_few_calibration_scores_warn_and_flag_nothing() -> None:
    with pytest.warns(UserWarning, match="too few"):
        cal = Calibration.from_scores(np.arange(5.0), 0.05)
    assert not cal.is_ood(np.array([1e9])).any()


def test_bad_calibration_inputs() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Calibration.from_scores(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        Calibration.from_scores(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="target_fpr"):
        Calibration.from_scores(np.array([1.0]), 1.5)


def test_metrics_perfect_random_and_inverted() -> None:
    idd = np.linspace(0, 1, 100)
    perfect = ood_metrics(idd, idd + 2)
    assert perfect["auroc"] == 1.0
    assert perfect["fpr95_ood_positive"] == 0.0 and perfect["fpr95_id_positive"] == 0.0
    assert perfect["aupr_in"] == 1.0 and perfect["aupr_out"] == 1.0
    same = ood_metrics(idd, idd.copy())
    assert same["auroc"] == pytest.approx(0.5)
    inverted = ood_metrics(idd + 2, idd)
    assert inverted["auroc"] == 0.0 and inverted["fpr95_ood_positive"] == 1.0


def test_fpr95_conventions_differ_as_documented() -> None:
    # ID uniform on [0, 1]; OOD: 90 % at 0.5..1.5 and 10 % deep inside ID.
    idd = np.linspace(0, 1, 1000)
    ood = np.concatenate([np.linspace(0.5, 1.5, 900), np.full(100, 0.1)])
    m = ood_metrics(idd, ood)
    # Catching 95 % of OOD needs a threshold below 0.1 -> about 90 % of ID flagged.
    assert m["fpr95_ood_positive"] == pytest.approx(0.9, abs=0.01)
    # Accepting 95 % of ID puts the threshold at 0.95 -> OOD below 0.95 accepted: 100 + 405 of 1000.
    assert m["fpr95_id_positive"] == pytest.approx(0.505, abs=0.01)


def test_format_table_lists_every_set() -> None:
    rows = {
        "a": ood_metrics(np.arange(10.0), np.arange(10.0) + 5),
        "b": ood_metrics(np.arange(10.0), np.arange(10.0)),
    }
    text = format_table(rows, title="T")
    assert "FPR95(OOD+)" in text and "\na " in text and "\nb " in text


def test_auroc_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    id_s, ood_s = rng.normal(size=300), rng.normal(0.8, 1.0, size=200)
    point = ood_metrics(id_s, ood_s)["auroc"]
    lo, hi = auroc_ci(id_s, ood_s, n_boot=400)
    assert lo < point < hi and hi - lo < 0.15
    assert auroc_ci(id_s, ood_s, n_boot=400) == (lo, hi)  # a fixed seed: the same interval every run
    assert auroc_ci(id_s, ood_s, n_boot=400, seed=1) != (lo, hi)
    # the analytic standard error of the AUROC (Hanley & McNeil) sets the expected width
    a, n1, n0 = point, len(ood_s), len(id_s)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    assert (hi - lo) / (2 * 1.96 * se) == pytest.approx(1.0, abs=0.25)
    assert auroc_ci(np.zeros(5), np.ones(5), n_boot=50) == (1.0, 1.0)  # perfectly separated: no spread
