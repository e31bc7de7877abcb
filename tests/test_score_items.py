"""One scoring path: every per-image output - predict, score rows, evaluation, the service's scorer - is
built on ``Detector.score_decoded`` and agrees with it bit for bit; ``score_array`` is the torch engine itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discopatch import Detector
from discopatch.data.images import preprocess
from discopatch.evaluation.evaluate import collect, evaluate
from discopatch.evaluation.reproduce import Source, evaluate_sources
from discopatch.inference.engine import TorchEngine, score_array
from discopatch.monitoring.streams import Item, Scorer
from discopatch.results import ImageResult


@pytest.fixture(scope="module")
def paths(tmp_path_factory, fmnist) -> list[Path]:
    root = tmp_path_factory.mktemp("items")
    out = []
    for i, a in enumerate(fmnist.test_images[:6]):
        out.append(root / f"img{i}.png")
        Image.fromarray(a).save(out[-1])
    bad = root / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    out.insert(2, bad)
    return out


def test_score_items_yields_one_typed_result_per_input_in_order(trained_detector: Detector, paths) -> None:
    results = list(trained_detector.score_items(paths, chunk_size=3))
    assert all(isinstance(r, ImageResult) for r in results)
    assert [r.source for r in results] == [str(p) for p in paths]
    bad = results[2]
    assert not bad.ok and bad.score is None and bad.d_score is None and bad.p_value is None and bad.is_ood is None
    assert "broken.png" in (bad.error or "")
    good = [r for r in results if r.ok]
    assert len(good) == 6 and all(r.error is None for r in good)
    # d-only detector: D's own score is the score; the decision is the calibrated threshold's
    assert all(r.d_score == r.score for r in good)
    assert all(r.is_ood == (r.score > trained_detector.threshold) for r in good)  # type: ignore[operator]
    assert all(0 < r.p_value <= 1 for r in good)  # type: ignore[operator]


def test_every_per_image_output_agrees_with_score_decoded(trained_detector: Detector, paths) -> None:
    det = trained_detector
    cfg = det.preprocess_config
    decoded = []
    for p in paths:
        try:
            decoded.append((preprocess(p, cfg), None))
        except Exception as e:  # the broken file
            decoded.append((None, str(e)))
    names = [str(p) for p in paths]
    ref = det.score_decoded(names, decoded)
    scores = np.array([r.score for r in ref if r.ok])

    # predict, the score command's rows and score_items: one chunk each, the same numbers exactly
    pred = det.predict(paths)
    np.testing.assert_array_equal(pred.scores[[i for i, r in enumerate(ref) if r.ok]], scores)
    assert [r for r in pred.results()] == ref
    rows = list(det.iter_score_files(paths, chunk_size=len(paths)))
    assert [row["score"] for row in rows] == [r.score for r in ref]
    assert [row["p_value"] for row in rows] == [r.p_value for r in ref]
    assert list(det.score_items(paths)) == ref

    # the service's scorer (decoding on its own pool)
    scorer = Scorer(det)
    try:
        served, _ = scorer.score([Item(str(p), p.read_bytes()) for p in paths])
    finally:
        scorer.close()
    assert [s["score"] for s in served] == [r.score for r in ref]
    assert [s["is_ood"] for s in served] == [r.is_ood for r in ref]

    # evaluation, in memory and streamed from files, collects the same scores and the same unreadable file
    got, errors = collect(ref)
    np.testing.assert_array_equal(got, scores)
    assert [p for p, _ in errors] == [str(paths[2])]
    mem = evaluate(det, paths[0].parent, {"same": paths[0].parent})
    assert mem.rows["same"]["auroc"] == 0.5 and mem.n_id == 6 and len(mem.unreadable["id"]) == 1
    files = Source("id", list(paths), names, "id")
    streamed = evaluate_sources(det, files, [Source("same", list(paths), names)], chunk_size=len(paths))
    np.testing.assert_array_equal(streamed.id_scores, scores)
    assert streamed.unreadable["id"] == errors


def test_explanations_come_from_the_scoring_pass(trained_detector: Detector, paths) -> None:
    plain = list(trained_detector.score_items(paths))
    explained = list(trained_detector.score_items(paths, explain=True))
    for a, b in zip(plain, explained):
        assert (a.explanation, b.explanation is None) == (None, not b.ok)
        if b.ok:
            assert b.explanation is not None
            assert b.score == b.explanation.score
            assert b.score == pytest.approx(a.score, abs=1e-12)


def test_score_decoded_checks_its_arguments(trained_detector: Detector) -> None:
    with pytest.raises(ValueError, match="2 sources for 1 decoded"):
        trained_detector.score_decoded(["a", "b"], [(None, "x")])
    assert trained_detector.score_decoded([], []) == []


def test_score_array_is_the_torch_engine(trained_detector: Detector, mixed_stack) -> None:
    D = trained_detector.discriminator
    n, seed = trained_detector.n_patches, trained_detector.seed
    np.testing.assert_array_equal(score_array(D, mixed_stack, n, seed), TorchEngine(D, n, seed).score(mixed_stack))
    with pytest.raises(ValueError, match="cannot be pooled"):
        score_array(D, mixed_stack[:3], n, seed, pool_images=2)


@pytest.fixture(scope="module")
def mixed_stack(fmnist, trained_detector) -> np.ndarray:
    cfg = trained_detector.preprocess_config
    return np.stack([preprocess(a, cfg) for a in fmnist.test_images[:8]])
