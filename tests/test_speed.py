"""bench-speed and the precision check: counts and plumbing only (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from discopatch.cli import main
from discopatch.inference.speed import bench_speed, discriminator_macs, flops_per_image, precision_check
from discopatch.model import Discriminator
from discopatch.presets import get_preset
from helpers.presets import tiny_preset


def test_mac_count_matches_the_paper_model() -> None:
    cfg = get_preset("paper").model
    # 3.5 M + 3 x 75.5 M + the 16,384-input head per 64 px patch (baselines.md section 1.2): 29.4 GFLOP/image.
    assert discriminator_macs(cfg) == 9 * 3 * 128 * 32**2 + 3 * 9 * 128 * 256 * 16**2 + 1024 * 4 * 4
    assert flops_per_image(cfg, 64) / 1e9 == pytest.approx(29.4, abs=0.05)


def test_bench_speed_smoke() -> None:
    p = tiny_preset()
    torch.manual_seed(0)
    rep = bench_speed(
        Discriminator(p.model),
        p.preprocess,
        p.test_patches,
        batch_sizes=(1, 3),
        threads=(1,),
        engines=("torch", "onnx"),
        precisions=("fp32", "bf16", "int8"),
        min_time=0.0,
        max_reps=1,
    )
    combos = {(r.engine, r.precision) for r in rep.rows}
    assert combos == {("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8")}
    assert len(rep.rows) == 8 and set(rep.peaks) == {"fp32@1", "bf16@1"}
    for r in rep.rows:
        assert r.images_per_s > 0 and r.ms_per_image > 0 and 0 < r.decode_seconds <= r.seconds_per_call
    assert "GFLOP/s" in rep.table() and rep.markdown().count("\n| ") == 9


def test_precision_check_reports_deltas(trained_detector) -> None:
    checks = precision_check(trained_detector, limit=40)
    assert [c.precision for c in checks] == ["bf16", "int8"]
    for c in checks:
        assert set(c.auroc) == set(c.auroc_fp32) and len(c.auroc) == 7
        assert c.max_abs_delta >= 0 and c.passed == (c.max_abs_delta <= 1e-3)


def test_cli_bench_speed_json(tmp_path: Path, capsys) -> None:
    js, md = tmp_path / "b.json", tmp_path / "b.md"
    args = ["bench-speed", "--preset", "small", "--batch-sizes", "2", "--threads", "1", "--min-time", "0"]
    assert main([*args, "--max-reps", "1", "--engines", "torch", "--json", str(js), "--markdown", str(md)]) == 0
    data = json.loads(js.read_text())
    assert data["rows"][0]["images_per_call"] == 2
    small = get_preset("small")
    assert data["gflop_per_image"] == pytest.approx(flops_per_image(small.model, small.test_patches) / 1e9)
    assert "% of fp32 peak" in md.read_text() and "ms/img" in capsys.readouterr().out
    assert data["rows"][0]["ratio_own_precision"] == pytest.approx(data["rows"][0]["ratio_end_to_end"])
    assert main(["bench-speed", "--check-precision"]) == 2  # needs a trained model
