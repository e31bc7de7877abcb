"""Per-patch explanations and heat maps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from discopatch.cli import main
from discopatch.detector import Detector
from discopatch.inference.explain import Explanation, caption, overlay, save_overlay

QUADRANTS = [(slice(0, 16), slice(0, 16)), (slice(0, 16), slice(16, 32)), (slice(16, 32), slice(0, 16)),
             (slice(16, 32), slice(16, 32))]  # fmt: skip


def _checker_quadrant(image: np.ndarray, q: int) -> np.ndarray:
    out = image.copy()
    ys, xs = QUADRANTS[q]
    out[ys, xs] = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    return out


def test_a_corrupted_quadrant_lights_up(local_detector: Detector, fmnist) -> None:
    # Each quadrant position in turn gets a pixel checkerboard (the high-frequency artefact D learns to reject);
    # averaged over a few images, the corrupted quadrant has the largest mean contribution.
    clean = local_detector._stack(fmnist.test_images[:6])
    for q in range(4):
        means = np.zeros(4)
        for img in clean:
            heat = local_detector.explain(_checker_quadrant(img, q)[None])[0].heatmap()
            means += [np.nanmean(heat[ys, xs]) for ys, xs in QUADRANTS]
        others = np.delete(means, q)
        assert means[q] > others.max(), (q, means / len(clean))


def test_contributions_average_to_d_score_and_fused_parts_match(local_detector: Detector, fmnist) -> None:
    images = fmnist.test_images[:5]
    explanations = local_detector.explain(images)
    stack = local_detector._stack(images)
    d_scores = local_detector.scoring_engine().score(stack, local_detector.batch_size)
    fused = local_detector.score(images)
    sm = local_detector.stats_model
    assert sm is not None
    for e, d, f in zip(explanations, d_scores, fused):
        assert e.contributions.shape == (local_detector.n_patches,)
        assert abs(e.contributions.mean() - d) <= 1e-12 and e.d_score == d
        assert e.score == f and e.score == max(e.d_z, e.stats_z)
        assert e.source == ("statistics" if e.stats_z > e.d_z else "discriminator")
        assert e.d_z == pytest.approx((d - sm.fusion[0]) / sm.fusion[1], abs=1e-12)


def test_d_only_explanation_equals_score(trained_detector: Detector, fmnist) -> None:
    images = fmnist.test_images[:7]
    explanations = trained_detector.explain(images)
    scores = trained_detector.score(images)
    for e, s in zip(explanations, scores):
        assert e.score == s and abs(e.contributions.mean() - s) <= 1e-12
        assert e.source == "discriminator" and e.d_z is None
        assert (e.corners >= 0).all() and (e.corners + e.patch_size <= 32).all()


def test_heatmap_averages_overlaps_and_leaves_uncovered_pixels_empty(trained_detector: Detector, fmnist) -> None:
    e = trained_detector.explain(fmnist.test_images[:1])[0]
    e.corners = np.array([[0, 0], [8, 8]] + [[0, 0]] * (len(e.contributions) - 2))
    e.contributions = np.array([0.2, 0.6] + [0.2] * (len(e.contributions) - 2))
    heat = e.heatmap()
    assert heat[0, 0] == pytest.approx(0.2)
    assert heat[10, 10] == pytest.approx((0.2 * (len(e.contributions) - 1) + 0.6) / len(e.contributions))
    assert heat[20, 20] == pytest.approx(0.6)
    assert np.isnan(heat[30, 30])
    pic = overlay(e)
    assert pic.dtype == np.uint8 and pic.shape[0] >= 256 and pic.shape[2] == 3


def test_score_cli_writes_one_overlay_per_readable_image(local_detector: Detector, fmnist, tmp_path) -> None:
    model = copy.deepcopy(local_detector).save(tmp_path / "model")  # the shared detector stays unsaved
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(fmnist.test_images[i]).save(p)
        paths.append(p)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "scores.jsonl"
    rc = main(["score", str(model), *map(str, paths), str(bad), "--out", str(out), "--heatmaps",
               str(tmp_path / "maps"), "--engine", "torch", "--device", "cpu"])  # fmt: skip
    assert rc == 1  # the unreadable file
    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    maps = sorted((tmp_path / "maps").glob("*.png"))
    assert len(maps) == 3
    assert [r["heatmap"] is not None for r in rows] == [True, True, True, False]
    for r in rows[:3]:
        with Image.open(r["heatmap"]) as im:
            assert im.mode == "RGB" and im.size[0] >= 256


def _explanation(source: str, score_mode: str = "fused") -> Explanation:
    rng = np.random.default_rng(0)
    fused = score_mode == "fused"
    return Explanation(
        image=rng.integers(0, 256, (32, 32), dtype=np.uint8),
        corners=rng.integers(0, 25, (16, 2)),
        patch_size=8,
        contributions=np.full(16, 0.05),  # uniformly real-like: the blue map of a statistics-flagged image
        d_score=0.05,
        score=6.25 if fused else 0.05,
        score_mode=score_mode,
        source=source,
        d_z=-0.4 if fused else None,
        stats_z=6.25 if fused else None,
        stats_score=40.0 if fused else None,
    )


def test_a_saved_heat_map_has_a_legend_with_the_score_and_the_view(tmp_path) -> None:
    """A heat-map PNG used to be the bare map: no colour legend, no score, and nothing saying that the statistics view
    set a fused score (so its map was uniformly blue without explanation)."""
    e = _explanation("statistics")
    save_overlay(e, str(tmp_path / "map.png"))
    bare = overlay(e)
    with Image.open(tmp_path / "map.png") as im:
        pic, description = np.asarray(im.convert("RGB")), im.text["Description"]
    assert pic.shape[1] == bare.shape[1] and pic.shape[0] > bare.shape[0] + 40  # a strip below the map
    np.testing.assert_array_equal(pic[: bare.shape[0]], bare)
    strip = pic[bare.shape[0] :].astype(int)
    reds, blues = strip[..., 0] - strip[..., 2], strip[..., 2] - strip[..., 0]
    assert reds.max() > 150 and blues.max() > 150  # both ends of the colour ramp
    assert (strip.sum(-1) < 150).any()  # dark text
    assert description.startswith("score 6.25 (fused), set by the statistics view: z 6.25 vs D -0.4")
    assert "no position" in description
    assert caption(_explanation("discriminator"))[0] == "score 6.25 (fused), set by D's patches: z -0.4 vs stats 6.25"
    assert caption(_explanation("discriminator", "d-only"))[0] == "score 0.05 (d-only), set by D's patches (their mean)"


def test_score_heatmaps_carry_the_caption(local_detector: Detector, fmnist, tmp_path) -> None:
    model = copy.deepcopy(local_detector).save(tmp_path / "model")
    Image.fromarray(fmnist.test_images[0]).save(tmp_path / "a.png")
    out = tmp_path / "scores.jsonl"
    argv = ["score", str(model), str(tmp_path / "a.png"), "--out", str(out), "--heatmaps", str(tmp_path / "maps")]
    assert main([*argv, "--engine", "torch", "--device", "cpu", "--quiet"]) == 0
    import json

    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    with Image.open(row["heatmap"]) as im:
        assert im.size[1] > im.size[0]
        assert im.text["Description"].startswith(f"score {row['score']:.4g} (fused), set by ")
