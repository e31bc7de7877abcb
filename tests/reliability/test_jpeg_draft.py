"""Reduced JPEG decoding (``Image.draft``) is a deterministic preprocessing rule that only applies over the budget.

Rule: a JPEG whose full-size decode fits ``MAX_DECODE_BYTES`` is decoded at full size, always (bit-identical to
before); one that does not is decoded at the least DCT reduction (1/2, 1/4, 1/8) that fits and keeps its short
side at least the model's ``image_size``; if none does, it is refused. The rule depends only on the header and the
detector's preprocessing, so ID and OOD images of the same size and layout are treated alike.

At the real 1 GiB budget the rule starts at about 150 Mpx (progressive 4:2:0), too large for a test, so these
tests lower the budget to force each reduction on 1024 px photos-like JPEGs. ``pytest -s`` prints the effect that
docs/RELIABILITY.md quotes.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from discopatch.data import images
from discopatch.data.decoding import jpeg_cost
from discopatch.data.images import ImageReadError, decoding_cost, open_image, preprocess

SIDE = 1024


@pytest.fixture(scope="module")
def jpegs(fmnist) -> list[bytes]:
    """Fashion-MNIST test images enlarged to 1024 px with a sensor-like grain, as progressive JPEGs (quality 90)."""
    rng = np.random.default_rng(0)
    out = []
    for a in fmnist.test_images[:24]:
        big = np.asarray(Image.fromarray(a).resize((SIDE, SIDE), Image.Resampling.LANCZOS), dtype=np.float32)
        big = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(big).convert("RGB").save(buf, "JPEG", quality=90, progressive=True)
        out.append(buf.getvalue())
    return out


def _budget_for(data: bytes, scale: int) -> int:
    """The cost of decoding ``data`` at ``1/scale``: as a budget it makes exactly that reduction the least that fits."""
    return jpeg_cost(Image.open(io.BytesIO(data)), io.BytesIO(data), scale).total


def test_a_jpeg_that_fits_is_decoded_at_full_size(jpegs, trained_detector) -> None:
    cfg = trained_detector.preprocess_config
    data = jpegs[0]
    assert decoding_cost(data, cfg.image_size).total == _budget_for(data, 1) <= images.MAX_DECODE_BYTES
    assert open_image(data, min_side=cfg.image_size).size == (SIDE, SIDE)
    whole = Image.open(io.BytesIO(data))
    whole.load()
    np.testing.assert_array_equal(preprocess(data, cfg), preprocess(whole, cfg))  # no reduction, bit-identical


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_over_the_budget_a_jpeg_is_reduced_least_and_its_pixels_barely_move(
    jpegs, trained_detector, monkeypatch, scale: int
) -> None:
    cfg = trained_detector.preprocess_config
    full = np.stack([preprocess(d, cfg) for d in jpegs])
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", _budget_for(jpegs[0], scale))
    assert open_image(jpegs[0], min_side=cfg.image_size).size == (SIDE // scale, SIDE // scale)
    reduced = np.stack([preprocess(d, cfg) for d in jpegs])
    diff = np.abs(full.astype(np.int16) - reduced.astype(np.int16))
    s_full, s_red = trained_detector.score_preprocessed(full), trained_detector.score_preprocessed(reduced)
    one = full.copy()  # reference: one pixel one level up, which re-draws the content-seeded patches too
    one[:, 0, 0] = np.where(one[:, 0, 0] < 255, one[:, 0, 0] + 1, 254)
    s_one = trained_detector.score_preprocessed(one)
    print(
        f"\n1/{scale}: pixels max |d| {diff.max()}, mean {diff.mean():.3f}; score |d| median "
        f"{np.median(np.abs(s_red - s_full)):.4f}, signed mean {np.mean(s_red - s_full):+.4f}; one pixel +1: "
        f"median {np.median(np.abs(s_one - s_full)):.4f}; ID score std {np.std(s_full):.4f}"
    )
    assert diff.max() <= 3 and diff.mean() < 0.5  # measured 1, 1, 2 (1/2, 1/4, 1/8)


def test_a_jpeg_is_refused_when_no_reduction_fits_or_none_is_allowed(jpegs, monkeypatch) -> None:
    data = jpegs[0]
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", _budget_for(data, 2))
    assert open_image(data, min_side=SIDE // 2).size == (SIDE // 2, SIDE // 2)
    with pytest.raises(ImageReadError, match=r"1024x1024 JPEG RGB needs \d+ bytes to decode \(\d+ bytes of decoded"):
        open_image(data, min_side=SIDE // 2 + 1)  # 1/2 would make the model upscale: refused
    with pytest.raises(ImageReadError, match=r"DCT coefficients \(multi-scan JPEG\)\), over the \d+-byte limit"):
        open_image(data)  # without a model size, nothing is reduced
