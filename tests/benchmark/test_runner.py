"""The benchmark's whole pipeline at CI size: every stage runs and the three report files are written."""

from __future__ import annotations

import json

import pytest

from discopatch.benchmark.runner import QUICK, run_benchmark
from discopatch.data.corruptions import CORRUPTIONS
from helpers.presets import tiny_preset


@pytest.mark.slow
def test_quick_fmnist_benchmark_writes_reports(tmp_path) -> None:
    # The tiny preset keeps this smoke run of every stage within CI's budget; the real presets run in the benchmark.
    res = run_benchmark("fmnist", tmp_path, quick=True, progress=False, budget=QUICK, preset=tiny_preset())
    for name in ("results.json", "summary.md", "report.html"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    methods = saved["methods"]
    main = methods["DisCoPatch (per-image statistics)"]
    covariate = main["covariate_auroc"]
    assert len(covariate) == len(CORRUPTIONS) and all(len(v) == 5 for v in covariate.values())
    assert {"control/null", "control/hflip"} <= set(main["sets"])
    groups = {m["group"] for m in methods.values()}
    assert {"discopatch", "variant", "ablation-leaky", "ablation-layer", "ablation-norm", "label-free"} <= groups
    assert "label-based" in groups  # Fashion-MNIST has class labels
    assert res["patch_count_sweep"][0]["n_patches"] == 1
    assert set(res["mixed_batches"]) and set(res["drift_power"]["shifts"])
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64" in html and "heatmap" in html


@pytest.mark.slow
def test_step_budgets_give_variants_a_main_row_trained_as_long(tmp_path) -> None:
    import dataclasses

    budget = dataclasses.replace(QUICK, main_steps=6, ablation_steps=3)
    res = run_benchmark(
        "fmnist",
        None,
        quick=True,
        progress=False,
        budget=budget,
        preset=tiny_preset(),
        stages=("variants", "ablations"),
    )
    methods = res["methods"]
    assert res["main_training"]["steps"] == 6
    early = methods["DisCoPatch at 3 steps (the variants' budget)"]
    assert early["group"] == "variant" and "step 3" in early["notes"]
    trained = [m for name, m in methods.items() if name.startswith(("variant: ", "norm ablation: "))]
    assert trained and all(m["notes"].startswith("3 steps (step budget)") for m in trained)
