"""Scores must survive restructuring: a refactor leaves every score of a seeded detector bit-identical.

A small-preset detector (gray, the demo's Fashion-MNIST subset, seed 0, 6 training steps, fused score, D's score,
p-values, threshold) is trained and scored and compared with ``tests/data/score_regression.json``. The values were
recorded part-way through the "one house" restructuring; the code from before it (commit 6a43b22) reproduces
them exactly. On the CPU capability and torch build that recorded them the comparison is exact; elsewhere
(another instruction set or torch build can round differently) it allows 1e-9 relative. Re-record only for a
deliberate change of scores: ``python tests/test_score_regression.py --record``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from discopatch.data.builtin import load_demo_fashion_mnist
from discopatch.detector import Detector

RECORD = Path(__file__).parent / "data" / "score_regression.json"


def _platform() -> dict[str, str]:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _compute() -> dict[str, list[float]]:
    # One thread for torch and for numpy's BLAS (threadpoolctl comes with scikit-learn): the statistics model's
    # matrix products round differently with the BLAS thread count (about 1e-14 in the fused score).
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            return _train_and_score()
    finally:
        torch.set_num_threads(threads)


def _train_and_score() -> dict[str, list[float]]:
    data = load_demo_fashion_mnist()
    det = Detector("small", channels=1, device="cpu", seed=0, engine="torch")
    det.fit(data.train_images[:600], max_steps=6, progress=False)
    test = data.test_images[:24]
    pred = det.predict(test)
    out = {
        "score": det.score(test).tolist(),
        "predict_score": [float(v) for v in pred["scores"]],
        "d_score": [float(v) for v in pred.d_scores],
        "p_value": [float(v) for v in pred["p_values"]],
        "threshold": [float(det.calibration.threshold)],
    }
    return out


def test_scores_match_the_recorded_ones() -> None:
    assert RECORD.exists(), "record the reference scores first: python tests/test_score_regression.py --record"
    saved = json.loads(RECORD.read_text())
    got = _compute()
    assert set(got) == set(saved["scores"])
    exact = saved["platform"] == _platform()
    for key, want in saved["scores"].items():
        if exact:
            np.testing.assert_array_equal(np.array(got[key]), np.array(want), err_msg=key)
        else:  # another CPU or torch build may round differently
            np.testing.assert_allclose(np.array(got[key]), np.array(want), rtol=1e-9, atol=1e-12, err_msg=key)


if __name__ == "__main__" and "--record" in sys.argv:
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps({"platform": _platform(), "scores": _compute()}, indent=1) + "\n")
    print(f"wrote {RECORD}")
