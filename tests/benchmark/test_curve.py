"""The learning curve: log-spaced snapshots, evaluation of copies (not of the live model), diagnostics, reports."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from discopatch.benchmark.curve import curve_steps, merge_curves, radial_power_spectrum, run_curve
from discopatch.benchmark.curve_diagnostics import aggregate_patch_scores, check_aggregations
from discopatch.errors import ConfigError
from discopatch.inference.engine import scores_from_logits
from helpers.presets import tiny_preset


def test_curve_steps_are_log_spaced_and_end_at_the_total() -> None:
    assert curve_steps(900, 6) == [25, 51, 105, 215, 440, 900]
    assert curve_steps(10, 4) == [1, 2, 5, 10]
    s = curve_steps(5000, 8)
    assert s[-1] == 5000 and all(b > a for a, b in zip(s, s[1:]))
    ratios = np.diff(np.log(s))
    assert np.ptp(ratios) < 0.05  # equal steps on a log axis
    with pytest.raises(ValueError):
        curve_steps(0, 3)


def test_power_spectrum_separates_noise_from_smooth_patches() -> None:
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(64, 1, 16, 16, generator=g) * 2 - 1
    smooth = torch.nn.functional.avg_pool2d(torch.nn.functional.interpolate(noise, scale_factor=0.25), 1)
    smooth = torch.nn.functional.interpolate(smooth, size=16, mode="bilinear", align_corners=False)
    hi = lambda s: s[len(s) // 2 :].sum() / s.sum()  # noqa: E731
    assert hi(radial_power_spectrum(noise)) > 0.4  # white noise: power spread over all bands
    assert hi(radial_power_spectrum(smooth)) < 0.1


@pytest.mark.slow
def test_quick_curve_writes_reports(tmp_path) -> None:
    res = run_curve(
        "fmnist", tmp_path, preset=tiny_preset(), steps=6, points=2, seeds=(0, 1), quick=True,
        n_train=200, n_test=40, n_ood=16, stats_images=100, diag_images=16, progress=False,
    )  # fmt: skip
    assert res["steps"] == curve_steps(6, 2) == [3, 6]
    for seed in ("0", "1"):
        rows = res["runs"][seed]
        assert [r["step"] for r in rows] == res["steps"]
        for r in rows:
            for kind in ("d-only", "fused"):
                assert 0.0 <= r[kind]["covariate_mean_auroc"] <= 1.0
                assert len(r[kind]["per_set_auroc"]) >= 75 + 2
            g = r["game"]
            assert set(g["spectra"]) == {"real", "recon", "gen"} and 0 <= g["id_separation"] <= 1
            assert 0 <= g["overfit_auroc"] <= 1 and 0 <= g["d_train_per_image"] <= 1
            assert r["cpu_minutes"] > 0
    # Different seeds train different detectors.
    a, b = res["runs"]["0"][-1], res["runs"]["1"][-1]
    assert a["d-only"]["per_set_auroc"] != b["d-only"]["per_set_auroc"]
    assert set(res["end_point"]["d-only"]) >= {"covariate_mean_auroc", "null_auroc"}
    saved = json.loads((tmp_path / "curve.json").read_text())
    assert saved["steps"] == res["steps"]
    md = (tmp_path / "curve.md").read_text()
    assert "| seed | step |" in md and "End point" in md
    assert (tmp_path / "curve.png").stat().st_size > 1000


@pytest.mark.slow
def test_seeds_run_apart_merge_into_one_curve_with_per_step_spread() -> None:
    kw = dict(preset=tiny_preset(), at_steps=(4, 2), quick=True, n_train=200, n_test=40, n_ood=16,
              stats_images=100, diag_images=16, progress=False)  # fmt: skip
    a = run_curve("fmnist", seeds=(0,), **kw)
    b = run_curve("fmnist", seeds=(1,), **kw)
    assert a["steps"] == [2, 4] and [r["step"] for r in a["runs"]["0"]] == [2, 4]
    assert a["per_step"] == []  # one seed: no spread to report
    m = merge_curves([a, b])
    assert m["seeds"] == [0, 1] and m["steps"] == [2, 4]
    assert [e["step"] for e in m["per_step"]] == [2, 4] and all(e["n_seeds"] == 2 for e in m["per_step"])
    want = (a["runs"]["0"][-1]["d-only"]["null_auroc"] + b["runs"]["1"][-1]["d-only"]["null_auroc"]) / 2
    assert m["per_step"][-1]["d-only"]["null_auroc"][0] == pytest.approx(want)
    assert m["end_point"]["d-only"]["null_auroc"][0] == pytest.approx(want)
    with pytest.raises(ValueError, match="seed 0"):
        merge_curves([a, a])
    other = {**b, "protocol": "photos"}
    with pytest.raises(ValueError, match="protocol"):
        merge_curves([a, other])
    # A stopping budget recorded with the preset is not configuration (older runs kept the preset's own); the
    # model is.
    budget = copy.deepcopy(b)
    budget["preset"]["train"]["max_steps"] = 1380
    assert merge_curves([a, budget])["seeds"] == [0, 1]
    model = copy.deepcopy(b)
    model["preset"]["train"]["grouping"] = "domain" if a["preset"]["train"]["grouping"] == "image" else "image"
    with pytest.raises(ValueError, match="preset"):
        merge_curves([a, model])
    # A part written before a setting existed ran it at its default, and merges with one that records it.
    older = copy.deepcopy(b)
    del older["preset"]["model"]["d_widths"]
    assert merge_curves([a, older])["seeds"] == [0, 1]
    wider = copy.deepcopy(b)
    wider["preset"]["model"]["d_widths"] = [2 * w for w in b["preset"]["model"]["widths"]]
    with pytest.raises(ValueError, match="preset"):
        merge_curves([a, wider])


@pytest.mark.slow
def test_a_protocol_without_near_ood_sets_still_writes_its_curve(tmp_path, monkeypatch) -> None:
    """A host that lacks a near-OOD source (the loader skips it) gives a curve with no near-OOD axis, not a crash
    after the training is done."""
    import discopatch.benchmark.curve as curve_module

    real_load = curve_module.load_protocol

    def without_near(*args: object, **kwargs: object) -> object:
        data = real_load(*args, **kwargs)  # type: ignore[arg-type]
        data.near_ood.clear()
        data.skipped["near"] = "source missing on this host"
        return data

    monkeypatch.setattr(curve_module, "load_protocol", without_near)
    res = run_curve(
        "fmnist", tmp_path, preset=tiny_preset(), at_steps=(2,), seeds=(0,), quick=True,
        n_train=200, n_test=40, n_ood=16, stats_images=100, diag_images=16, progress=True,
    )  # fmt: skip
    point = res["runs"]["0"][-1]
    assert point["d-only"]["near_mean_auroc"] is None and point["fused"]["near_mean_auroc"] is None
    assert 0.0 <= point["d-only"]["far_mean_auroc"] <= 1.0
    assert json.loads((tmp_path / "curve.json").read_text())["runs"]["0"][-1]["d-only"]["near_mean_auroc"] is None
    assert "| seed | step |" in (tmp_path / "curve.md").read_text()
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_patch_aggregation_averages_the_least_real_patches() -> None:
    """``mean`` is the paper's score; a smaller share averages only the patches with the lowest D output."""
    logits = torch.tensor([[3.0, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    probs = torch.sigmoid(logits.double()).numpy()
    np.testing.assert_allclose(aggregate_patch_scores(logits, "mean"), scores_from_logits(logits))
    np.testing.assert_allclose(aggregate_patch_scores(logits, "max"), 1 - probs.min(axis=1))
    np.testing.assert_allclose(aggregate_patch_scores(logits, "top50"), 1 - np.sort(probs, axis=1)[:, :2].mean(axis=1))
    # a local anomaly (one of four patches) moves the least real quarter four times as far as the mean
    clean, local = torch.full((1, 4), 2.0), torch.tensor([[2.0, 2.0, 2.0, -2.0]])
    gain = lambda agg: float(aggregate_patch_scores(local, agg)[0] - aggregate_patch_scores(clean, agg)[0])  # noqa: E731
    assert gain("top25") == pytest.approx(4 * gain("mean"))


def test_relative_aggregates_compare_an_images_patches_with_each_other() -> None:
    """A shift of every patch alike moves the mean but not the contrasts; one less real patch among calmer ones
    (a pasted object) raises the contrasts even when the image's mean falls."""
    even, darker = torch.full((1, 8), 1.0), torch.full((1, 8), -1.0)
    for agg in ("gap12", "spread"):
        np.testing.assert_allclose(aggregate_patch_scores(even, agg), 0.0, atol=1e-12)
        np.testing.assert_allclose(aggregate_patch_scores(darker, agg), 0.0, atol=1e-12)
    np.testing.assert_allclose(aggregate_patch_scores(darker, "mean+gap12"), aggregate_patch_scores(darker, "mean"))
    pasted = torch.tensor([[-1.0] + [2.0] * 7])  # one patch less real than `even`'s, the other seven more real
    assert aggregate_patch_scores(pasted, "mean")[0] < aggregate_patch_scores(even, "mean")[0]
    for agg in ("gap12", "spread", "mean+gap12"):
        assert aggregate_patch_scores(pasted, agg)[0] > aggregate_patch_scores(even, agg)[0]
    c = 1 - torch.sigmoid(pasted.double()).numpy()[0]
    assert aggregate_patch_scores(pasted, "gap12")[0] == pytest.approx(c.max() - np.median(c))


def test_unknown_patch_aggregation_is_a_config_error() -> None:
    assert check_aggregations(["top25", "max"]) == ("top25", "max")
    assert check_aggregations(["gap12", "spread", "mean+gap12"]) == ("gap12", "spread", "mean+gap12")
    with pytest.raises(ConfigError, match="top50"):
        check_aggregations(["median"])
    with pytest.raises(ConfigError, match="median"):
        run_curve("fmnist", preset=tiny_preset(), at_steps=(1,), seeds=(0,), quick=True, aggregations=("median",))


@pytest.mark.slow
def test_other_test_patch_counts_and_aggregations_rescore_the_same_snapshot() -> None:
    """Both inference-time levers are paired: the preset's own count reproduces the row (so scoring the
    aggregations in the same pass left the mean's scores as they were), another count or aggregation differs."""
    preset = tiny_preset()
    own, more = preset.test_patches, 2 * preset.test_patches
    res = run_curve(
        "fmnist", preset=preset, at_steps=(3,), seeds=(0,), quick=True, n_train=200, n_test=40, n_ood=16,
        stats_images=100, diag_images=16, progress=False, other_test_patches=(own, more), aggregations=("max", "gap12"),
    )  # fmt: skip
    row = res["runs"]["0"][0]
    assert set(row["by_test_patches"]) == {str(own), str(more)}
    for kind in ("d-only", "fused"):
        assert row["by_test_patches"][str(own)][kind]["per_set_auroc"] == row[kind]["per_set_auroc"]
        assert row["by_aggregation"]["max"][kind]["per_set_auroc"] != row[kind]["per_set_auroc"]
        assert set(row["by_aggregation"]["max"][kind]) == set(row[kind])
    assert row["by_test_patches"][str(more)]["d-only"]["per_set_auroc"] != row["d-only"]["per_set_auroc"]
    assert res["preset"]["test_patches"] == own
