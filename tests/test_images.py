"""The single preprocessing pipeline: modes, sizes and specific errors for broken inputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discopatch.config import PreprocessConfig
from discopatch.data.images import ImageReadError, expand_paths, list_images, preprocess
from discopatch.data.sources import load_images, split_train_val

GRAY32 = PreprocessConfig(image_size=32, channels=1, resize="pad")
RGB32 = PreprocessConfig(image_size=32, channels=3, resize="resize_crop")


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_pad_centres_small_gray_images() -> None:
    a = np.full((28, 28), 200, np.uint8)
    out = preprocess(a, GRAY32)
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert out[2:30, 2:30].min() == 200 and out[:2].max() == 0


def test_resize_crop_keeps_aspect_and_centre() -> None:
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, 20:60] = 255  # a centred bright square region
    out = preprocess(a, RGB32)
    assert out.shape == (32, 32, 3)
    assert out[16, 16].min() > 200


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "I;16", "CMYK", "1"])
def test_every_mode_converts_to_the_model_channels(mode: str) -> None:
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8), "RGB")
    img = (
        base.convert(mode)
        if mode not in ("I;16",)
        else Image.fromarray(np.arange(400, dtype=np.uint16).reshape(20, 20) * 160)
    )
    for cfg in (GRAY32, RGB32):
        out = preprocess(_png(img) if mode != "CMYK" else _jpeg_cmyk(img), cfg)
        assert out.shape == ((32, 32) if cfg.channels == 1 else (32, 32, 3))


def _jpeg_cmyk(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def test_gray_is_replicated_to_rgb_consistently() -> None:
    g = np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8)
    out = preprocess(g, RGB32)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], g)


def test_transparency_is_composited_on_black() -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = 0  # fully transparent white
    assert preprocess(rgba, RGB32).max() == 0


def test_sixteen_bit_keeps_its_range() -> None:
    a = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    out = preprocess(_png(Image.fromarray(a)), GRAY32)
    assert out.min() == 0 and out.max() == 255


def test_exif_orientation_is_applied() -> None:
    a = np.zeros((16, 32), np.uint8)
    a[:, :4] = 255  # bright stripe on the left of a wide image
    img = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    out = preprocess(buf.getvalue(), PreprocessConfig(image_size=32, channels=1, resize="squash"))
    assert out[:4].mean() > 150  # the stripe is now on top


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, I am text", "not a recognised image format"),
        (_png(Image.new("L", (64, 64), 128))[:60], "corrupt or truncated"),
    ],
)
def test_broken_bytes_give_specific_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageReadError, match=message):
        preprocess(data, GRAY32)


def test_file_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file"):
        preprocess(tmp_path / "empty.png", GRAY32)
    with pytest.raises(ImageReadError, match="file not found"):
        preprocess(tmp_path / "missing.png", GRAY32)


def test_bad_arrays() -> None:
    with pytest.raises(ImageReadError, match="uint8"):
        preprocess(np.zeros((8, 8), np.float32), GRAY32)
    with pytest.raises(ImageReadError, match="must be"):
        preprocess(np.zeros((8, 8, 2), np.uint8), GRAY32)


def test_one_bad_input_does_not_stop_the_rest(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(_png(Image.new("L", (28, 28), 10)))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    res = load_images([good, bad, good], GRAY32)
    assert len(res) == 2 and len(res.errors) == 1
    assert "bad.png" in res.errors[0][0] and "not a recognised image format" in res.errors[0][1]


def test_listing_is_recursive_sorted_and_by_extension(tmp_path: Path) -> None:
    for rel in ["b/2.PNG", "a/1.jpg", "c.txt", "a/deep/3.webp", "d.tiff"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a/1.jpg", "a/deep/3.webp", "b/2.PNG", "d.tiff"]
    assert [p.name for p in expand_paths([tmp_path / "c.txt", tmp_path / "a"])] == [
        "c.txt",
        "1.jpg",
        "3.webp",
    ]


def test_split_is_deterministic_and_stable() -> None:
    names = [f"img{i}.png" for i in range(100)]
    tr, va = split_train_val(names, 0.2, seed=0)
    assert len(va) == 20 and len(tr) == 80 and not set(tr) & set(va)
    _tr2, va2 = split_train_val(names, 0.2, seed=0)
    assert np.array_equal(va, va2)
    # Adding images keeps most of the old validation images on the validation side.
    _, va3 = split_train_val([*names, *(f"new{i}.png" for i in range(10))], 0.2, seed=0)
    old_val = {names[i] for i in va}
    new_val = {([*names, *(f"new{i}.png" for i in range(10))])[i] for i in va3}
    assert len(old_val & new_val) >= 18
