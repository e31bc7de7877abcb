"""Per-image outputs for data tools: predict keeps names and records bad inputs, rows become DataFrames."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discopatch import Detector, Prediction, results_frame
from discopatch.data.images import stack_images
from discopatch.results import ImageResult
from discopatch.row_layout import COLUMNS, ROW_LAYOUT, VALUE_COLUMNS, columns, description
from helpers.presets import tiny_preset


@pytest.fixture(scope="module")
def files(tmp_path_factory, fmnist) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    out = {}
    for i, a in enumerate(fmnist.test_images[:3]):
        out[f"good{i}"] = root / "folder" / f"good{i}.png"
        out[f"good{i}"].parent.mkdir(exist_ok=True)
        Image.fromarray(a).save(out[f"good{i}"])
    out["empty"] = root / "folder" / "empty.png"
    out["empty"].write_bytes(b"")
    out["missing"] = root / "nope.png"
    return out


@pytest.fixture(scope="module")
def loaded(trained_detector, tmp_path_factory) -> Detector:
    """A saved and reloaded copy: it has a model id."""
    return Detector.load(trained_detector.save(tmp_path_factory.mktemp("saved") / "model"), device="cpu")


def test_mixed_inputs_keep_their_names_and_bad_ones_become_error_entries(trained_detector, fmnist, files) -> None:
    arrays = fmnist.test_images[:2]
    inputs = [arrays[0], str(files["good0"]), files["missing"], arrays[1], files["empty"]]
    out = trained_detector.predict(inputs)
    assert isinstance(out, Prediction)
    assert out.sources == ["#0", str(files["good0"]), str(files["missing"]), "#3", str(files["empty"])]
    assert [e is None for e in out.errors] == [True, True, False, True, False]
    assert "file not found" in out.errors[2] and "empty file" in out.errors[4]
    bad = [2, 4]
    assert np.isnan(out.scores[bad]).all() and np.isnan(out.p_values[bad]).all() and not out.is_ood[bad].any()
    # the readable inputs are scored exactly as before: bit-identical to score() and to a predict without bad inputs
    good = [0, 1, 3]
    expected = trained_detector.score([arrays[0], files["good0"], arrays[1]])
    np.testing.assert_array_equal(out.scores[good], expected)
    clean = trained_detector.predict(arrays)
    np.testing.assert_array_equal(out.scores[[0, 3]], clean["scores"])
    np.testing.assert_array_equal(out.p_values[[0, 3]], clean["p_values"])
    assert out.threshold == trained_detector.threshold and out.model_id == trained_detector.detector_id


def test_prediction_still_reads_like_the_old_dict(trained_detector, fmnist) -> None:
    out = trained_detector.predict(fmnist.test_images[:4])
    assert {"scores", "p_values", "is_ood", "threshold", "meta"} <= set(out)
    assert {"sources", "errors", "model_id"} <= set(out.to_dict()) and "d_scores" not in out
    assert out["scores"] is out.scores and dict(out)["is_ood"] is out.is_ood
    assert out["meta"]["name"] == "DisCoPatch" and out["meta"]["model_id"] == trained_detector.detector_id
    with pytest.raises(ValueError, match="image stack"):
        trained_detector.predict(fmnist.test_images[0])  # one (H, W) image is not a stack


def test_a_folder_is_expanded_and_its_unreadable_file_recorded(trained_detector, files) -> None:
    out = trained_detector.predict(files["good0"].parent)
    assert sorted(out.sources) == sorted(str(files[k]) for k in ("good0", "good1", "good2", "empty"))
    assert sum(e is not None for e in out.errors) == 1 and np.isfinite(out.scores).sum() == 3
    missing = trained_detector.predict(files["missing"])  # a path alone that does not exist: one error entry
    assert missing.sources == [str(files["missing"])] and "file not found" in missing.errors[0]


def test_to_frame_has_one_row_per_input_with_the_model_and_threshold(loaded: Detector, fmnist, files) -> None:
    out = loaded.predict([fmnist.test_images[0], files["missing"], files["good1"]])
    frame = out.to_frame()
    assert list(frame.columns) == ["source", "score", "p_value", "is_ood", "error", "threshold", "model_id"]
    assert list(frame.columns) == columns(with_d_score=False)
    assert len(frame) == 3 and frame["source"].tolist() == out.sources
    assert str(frame["is_ood"].dtype) == "boolean" and frame["is_ood"].isna().tolist() == [False, True, False]
    assert frame["score"].dtype == np.float64 and math.isnan(frame["score"][1])
    np.testing.assert_array_equal(frame["score"].to_numpy()[[0, 2]], out.scores[[0, 2]])
    assert (frame["threshold"] == loaded.threshold).all()
    assert (frame["model_id"] == loaded.detector_id).all()
    assert frame["error"].isna().tolist() == [True, False, True]
    json.dumps(out.rows())  # rows are plain JSON values (None where missing)
    assert loaded.detector_id is not None
    assert list(loaded.predict([]).to_frame().columns) == list(frame.columns)


def test_score_file_rows_become_the_same_frame(trained_detector, files) -> None:
    paths = [files["good0"], files["missing"], files["good2"]]
    frame = results_frame(trained_detector.iter_score_files(paths))
    assert list(frame.columns) == columns(with_d_score=False)
    assert frame["source"].tolist() == [str(p) for p in paths]
    pred = trained_detector.predict(paths).to_frame()
    np.testing.assert_array_equal(frame["score"].to_numpy(), pred["score"].to_numpy())
    assert frame["is_ood"].isna().tolist() == pred["is_ood"].isna().tolist() == [False, True, False]


def test_a_fused_detector_reports_d_score_too(trained_detector, fmnist, files) -> None:
    cfg = trained_detector.preprocess_config
    fused = Detector(tiny_preset().replace(score_mode="fused"), device="cpu", seed=0, engine="torch")
    fused.discriminator = trained_detector.discriminator
    fused.fit_statistics(stack_images(fmnist.train_images[:200], cfg), stack_images(fmnist.train_images[200:300], cfg))
    fused.calibrate(fmnist.train_images[300:400])
    d_only = Detector(tiny_preset(), device="cpu", seed=0, engine="torch")
    d_only.discriminator = trained_detector.discriminator
    x = fmnist.test_images[:5]
    out = fused.predict([*x, files["missing"]])
    np.testing.assert_array_equal(out.scores[:5], fused.score(x))
    np.testing.assert_allclose(out.d_scores[:5], d_only.score(x), rtol=0, atol=1e-9)
    assert np.isnan(out.d_scores[5]) and out["d_scores"] is out.d_scores
    frame = out.to_frame()
    assert list(frame.columns) == columns() and list(out.rows()[0]) == columns()
    rows = list(fused.iter_score_files([files["good0"], files["missing"]]))
    assert all(list(r) == columns("path") for r in rows)
    assert rows[1]["d_score"] is None
    assert rows[0]["d_score"] == pytest.approx(d_only.score([files["good0"]])[0], abs=1e-9)


def test_without_pandas_the_hint_names_the_extra(trained_detector, fmnist, monkeypatch) -> None:
    out = trained_detector.predict(fmnist.test_images[:1])
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'discopatch\[pandas\]'"):
        out.to_frame()


def test_one_row_layout_behind_every_row() -> None:
    """Rows, file rows and the service's values are projections of one specification, in its order."""
    assert COLUMNS == ("source", "score", "d_score", "p_value", "is_ood", "error", "threshold", "model_id")
    assert VALUE_COLUMNS == ("score", "d_score", "p_value", "is_ood", "error")
    without_d = ["path", "score", "p_value", "is_ood", "error", "threshold", "model_id"]
    assert columns("path", with_d_score=False) == without_d
    assert all(description(c.name) == c.description != "" for c in ROW_LAYOUT)
    bad = ImageResult("x.png", error="unreadable")
    empty = dict.fromkeys(("score", "d_score", "p_value", "is_ood"))
    expected = {"source": "x.png", **empty, "error": "unreadable", "threshold": None, "model_id": "m"}
    assert bad.row(math.inf, "m") == expected and list(bad.row(math.inf, "m")) == list(expected)
    good = ImageResult("y.png", 0.5, 0.25, 0.1, False)
    row = good.file_row(1.0, None, with_d_score=False)
    assert list(row) == without_d and (row["score"], row["threshold"], row["is_ood"]) == (0.5, 1.0, False)
    assert list(good.values()) == list(VALUE_COLUMNS) and "d_score" not in good.values(with_d_score=False)
