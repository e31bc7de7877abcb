"""The command line end to end on tiny generated image folders."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discopatch.cli import main

TINY = [
    "--widths",
    "8,16,32",
    "--latent-dim",
    "16",
    "--batch-images",
    "16",
    "--train-patches",
    "4",
    "--test-patches",
    "8",
    "--image-size",
    "32",
    "--patch-size",
    "16",
    "--resize",
    "pad",
]


def _write_folder(root: Path, images: np.ndarray, ext: str = "png") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(images):
        p = root / f"sub{i % 3}" / f"img{i:04d}.{ext}"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, fmnist):
    root = tmp_path_factory.mktemp("cli")
    _write_folder(root / "train", fmnist.train_images[:240])
    _write_folder(root / "id", fmnist.test_images[:40])
    noisy = np.clip(
        fmnist.test_images[40:80].astype(int) + np.random.default_rng(0).integers(-90, 90, (40, 28, 28)),
        0,
        255,
    )
    _write_folder(root / "noise", noisy.astype(np.uint8))
    model = root / "model"
    rc = main(
        [
            "fit",
            str(root / "train"),
            "--out",
            str(model),
            "--epochs",
            "2",
            "--quiet",
            "--device",
            "cpu",
            *TINY,
        ]
    )
    assert rc == 0
    return root, model


def test_fit_writes_a_loadable_detector(workspace) -> None:
    _, model = workspace
    meta = json.loads((model / "detector.json").read_text())
    assert meta["model"]["channels"] == 1  # auto-detected from gray PNGs
    assert meta["calibration"]["n"] == 24  # 10 % of 240
    assert meta["training"]["steps"] == 2 * (216 // 16)
    assert (model / "checkpoints" / "checkpoint.safetensors").exists()


def test_score_csv_with_an_unreadable_file(workspace, tmp_path: Path, capsys) -> None:
    root, model = workspace
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = sorted((root / "id").rglob("*.png"))[:3]
    out = tmp_path / "scores.csv"
    rc = main(["score", str(model), str(good[0]), str(bad), str(good[1]), str(good[2]), "--out", str(out)])
    assert rc == 1  # non-zero because one file failed
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [str(good[0]), str(bad), str(good[1]), str(good[2])]
    assert rows[1]["score"] == "" and "broken.png" in rows[1]["error"]
    for r in (rows[0], rows[2], rows[3]):
        # The small preset's fused score is a robust z-score (any real number); p-values are in (0, 1].
        assert r["error"] == "" and math.isfinite(float(r["score"])) and 0 < float(r["p_value"]) <= 1
        assert r["is_ood"] in ("true", "false")
    # Each good file scores the same as when scored on its own (no statistics shared with other files).
    alone = tmp_path / "alone.jsonl"
    assert main(["score", str(model), str(good[1]), "--out", str(alone)]) == 0
    assert json.loads(alone.read_text())["score"] == pytest.approx(float(rows[2]["score"]), abs=1e-9)
    assert "1 failed" in capsys.readouterr().err


def test_score_folder_to_stdout(workspace, capsys) -> None:
    root, model = workspace
    assert main(["score", str(model), str(root / "id")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "path,score,d_score,p_value,is_ood,error,threshold,model_id" and len(lines) == 41


def test_score_csv_and_jsonl_carry_the_same_columns_and_values(workspace, tmp_path: Path) -> None:
    """One row layout: the fused detector's CSV has ``d_score`` too, and every cell matches the JSON-lines row."""
    from discopatch.cli.score_rows import output_fields

    root, model = workspace
    as_csv, as_jsonl = tmp_path / "s.csv", tmp_path / "s.jsonl"
    for out in (as_csv, as_jsonl):
        assert main(["score", str(model), str(root / "id"), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    csv_rows = list(csv.DictReader(as_csv.open(newline="")))
    json_rows = [json.loads(line) for line in as_jsonl.read_text().splitlines()]
    assert list(csv_rows[0]) == list(json_rows[0]) == output_fields(with_d_score=True)
    for c, j in zip(csv_rows, json_rows, strict=True):
        assert c["path"] == j["path"] and c["model_id"] == j["model_id"] and c["is_ood"] == str(j["is_ood"]).lower()
        for key in ("score", "d_score", "p_value", "threshold"):
            assert float(c[key]) == j[key]  # exact: a CSV cell is the float's shortest repr
    assert any(j["d_score"] != j["score"] for j in json_rows)  # a fused score, not D's own


def test_resume_appends_to_a_csv_written_without_d_score_in_its_own_columns(workspace, tmp_path: Path) -> None:
    """A fused detector's CSV from before ``d_score`` was written to CSV keeps its columns when resumed, so every
    record of the file has the header's length and the resumed rows equal a full run's."""
    root, model = workspace
    full = tmp_path / "full.csv"
    assert main(["score", str(model), str(root / "id"), "--out", str(full), "--device", "cpu", "--quiet"]) == 0
    rows = list(csv.DictReader(full.open(newline="")))
    old_fields = [k for k in rows[0] if k != "d_score"]
    older = tmp_path / "older.csv"
    with older.open("w", newline="") as fh:  # the first 25 rows, as an older discopatch wrote them
        writer = csv.DictWriter(fh, fieldnames=old_fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[:25])
    rc = main(["score", str(model), str(root / "id"), "--out", str(older), "--resume", "--device", "cpu", "--quiet"])
    assert rc == 0
    records = list(csv.reader(older.open(newline="")))
    assert records[0] == old_fields and all(len(r) == len(old_fields) for r in records)
    resumed = list(csv.DictReader(older.open(newline="")))
    assert sorted(r["path"] for r in resumed) == sorted(r["path"] for r in rows)
    by_path = {r["path"]: r for r in rows}
    assert all(r["score"] == by_path[r["path"]]["score"] for r in resumed)


def test_evaluate_prints_table_and_json(workspace, tmp_path: Path, capsys) -> None:
    root, model = workspace
    js = tmp_path / "eval.json"
    rc = main(
        [
            "evaluate",
            str(model),
            "--id",
            str(root / "id"),
            "--ood",
            f"noise={root / 'noise'}",
            "--ood",
            f"same={root / 'id'}",
            "--json",
            str(js),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "FPR95(OOD+)" in out and "noise" in out
    res = json.loads(js.read_text())
    assert res["ood"]["same"]["auroc"] == pytest.approx(0.5)  # identical images, identical scores
    assert set(res["ood"]["noise"]) >= {
        "auroc",
        "fpr95_ood_positive",
        "fpr95_id_positive",
        "aupr_in",
        "aupr_out",
    }


@pytest.mark.slow
def test_resume_extends_training(workspace) -> None:
    root, model = workspace
    rc = main(["fit", str(root / "train"), "--out", str(model.parent / "model2"), "--epochs", "1", "--quiet", *TINY])
    assert rc == 0
    rc = main(
        [
            "fit",
            str(root / "train"),
            "--out",
            str(model.parent / "model2"),
            "--epochs",
            "2",
            "--resume",
            "--quiet",
            *TINY,
        ]
    )
    assert rc == 0
    meta = json.loads((model.parent / "model2" / "detector.json").read_text())
    assert meta["training"]["steps"] == 26 and meta["training"]["epochs_completed"] == 2


def test_clear_errors(workspace, tmp_path: Path, capsys) -> None:
    _, _model = workspace
    assert main(["score", str(tmp_path / "nope"), "x.png"]) == 4  # BadArtifactError: no detector there
    assert "not a detector directory" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "empty"), "--out", str(tmp_path / "m")]) == 3  # BadInputError
    assert "no such file or folder" in capsys.readouterr().err


def test_console_entry_point_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "discopatch", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("discopatch ")


def test_score_rows_carry_the_model_id_and_threshold(workspace, tmp_path: Path) -> None:
    from discopatch.artifact.files import detector_id
    from discopatch.detector import Detector

    root, model = workspace
    out = tmp_path / "s.jsonl"
    assert main(["score", str(model), str(root / "id"), "--out", str(out), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    det = Detector.load(model, device="cpu")
    assert det.detector_id == detector_id(model) and len(det.detector_id) == 16
    assert {r["model_id"] for r in rows} == {det.detector_id}
    assert {r["threshold"] for r in rows} == {det.threshold}
    # another calibration is another detector: its saved copy gets another id, and the scores say so
    det.calibrate(root / "id", target_fpr=0.2)
    det.save(tmp_path / "recal")
    assert det.detector_id == detector_id(tmp_path / "recal") != detector_id(model)
    row = next(iter(det.iter_score_files([next((root / "id").rglob("*.png"))])))
    assert row["model_id"] == det.detector_id and row["threshold"] == det.threshold


def test_evaluate_report_and_json_name_the_model_and_give_auroc_intervals(workspace, tmp_path: Path, capsys) -> None:
    from discopatch.artifact.files import detector_id
    from discopatch.detector import Detector

    root, model = workspace
    js, report = tmp_path / "eval.json", tmp_path / "out" / "report.html"
    argv = ["evaluate", str(model), "--id", str(root / "id"), "--ood", f"noise={root / 'noise'}", "--json", str(js)]
    assert main([*argv, "--report", str(report)]) == 0
    det = Detector.load(model, device="cpu")
    assert f"model {det.detector_id}: threshold" in capsys.readouterr().out
    res = json.loads(js.read_text())
    assert res["meta"]["model_id"] == det.detector_id == detector_id(model)
    assert res["meta"]["threshold"] == det.threshold
    row = res["ood"]["noise"]
    lo, hi = row["auroc_ci95"]
    assert lo <= row["auroc"] <= hi and lo < hi  # a bootstrap interval around the point AUROC
    id_scores, noise_scores = det.score(root / "id"), det.score(root / "noise")
    assert row["flagged"] == float(np.mean(noise_scores > det.threshold))
    assert res["id"]["flagged"] == float(np.mean(id_scores > det.threshold))
    html = report.read_text()
    assert html.count('src="data:image/png;base64,') == 2 and "ROC curves" in html and "Score histograms" in html
    assert f"{100 * lo:.1f} - {100 * hi:.1f}" in html and f"{100 * row['auroc']:.1f}" in html
    assert det.detector_id in html and f"{det.threshold:.6g}" in html
    assert main(argv) == 0 and "auroc_ci95" not in json.loads(js.read_text())["ood"]["noise"]  # only with --report
