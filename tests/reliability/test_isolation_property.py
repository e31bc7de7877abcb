"""Property: an image's score never depends on the other images in the call, their order or the batch size.

Hypothesis draws sets of random, structured and real (Fashion-MNIST demo) images; every image is scored alone and
then inside permuted co-batches of several batch sizes. Patch statistics are computed per image, so nothing may
leak between images (up to float32 rounding of a differently shaped forward pass, 1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discopatch.detector import Detector

ATOL = 1e-6
SETTINGS = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _structured(kind: str, value: int, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    if kind == "constant":
        return np.full((size, size), value, np.uint8)
    if kind == "gradient":
        return ((x + y) * value // (2 * size - 2) % 256).astype(np.uint8)
    return (((x // 4 + y // 4) % 2) * value).astype(np.uint8)  # checkerboard


@st.composite
def images(draw: st.DrawFn, demo: np.ndarray) -> np.ndarray:
    kind = draw(st.sampled_from(["random", "constant", "gradient", "checker", "demo"]))
    size = draw(st.sampled_from([20, 28, 32, 45]))  # padded, exact and cropped sizes
    if kind == "demo":
        return demo[draw(st.integers(0, len(demo) - 1))]
    if kind == "random":
        seed = draw(st.integers(0, 2**32 - 1))
        return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    return _structured(kind, draw(st.integers(0, 255)), size)


@pytest.fixture(scope="module")
def torch_detector(model_dir) -> Detector:
    return Detector.load(model_dir, device="cpu", engine="torch")


@pytest.fixture(scope="module")
def demo(fmnist) -> np.ndarray:
    return np.concatenate([fmnist.test_images[:40], fmnist.train_images[:20]])


def _check_isolation(det: Detector, imgs: list[np.ndarray], perm: list[int], batch_size: int) -> None:
    alone = np.array([det.score([im])[0] for im in imgs])
    old = det.batch_size
    try:
        det.batch_size = batch_size
        together = det.score([imgs[i] for i in perm])
    finally:
        det.batch_size = old
    np.testing.assert_allclose(together, alone[perm], rtol=0, atol=ATOL)


@pytest.mark.parametrize("engine", ["torch", "default"])
def test_score_is_independent_of_co_batch_order_and_batch_size(
    engine: str, torch_detector: Detector, trained_detector: Detector, demo: np.ndarray
) -> None:
    det = torch_detector if engine == "torch" else trained_detector

    @SETTINGS
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        imgs = data.draw(st.lists(images(demo), min_size=1, max_size=7), label="images")
        perm = data.draw(st.permutations(range(len(imgs))), label="order")
        batch_size = data.draw(st.integers(1, 8), label="batch_size")
        # the same images again, duplicated: identical inputs in one batch must not interact either
        dup = data.draw(st.booleans(), label="duplicate")
        if dup:
            imgs = imgs + imgs[:2]
            perm = list(perm) + list(range(len(perm), len(imgs)))
        _check_isolation(det, imgs, list(perm), batch_size)

    check()


@SETTINGS
@given(
    seeds=st.lists(st.integers(0, 2**31), min_size=2, max_size=6, unique=True),
    chunk=st.integers(1, 4),
)
def test_iter_score_files_chunks_do_not_change_scores(torch_detector: Detector, tmp_path_factory, seeds, chunk) -> None:
    from PIL import Image

    folder = tmp_path_factory.mktemp("iso")
    paths = []
    for s in seeds:
        p = folder / f"{s}.png"
        Image.fromarray(np.random.default_rng(s).integers(0, 256, (28, 28), dtype=np.uint8)).save(p)
        paths.append(p)
    rows = list(torch_detector.iter_score_files(paths, chunk_size=chunk))
    alone = [float(torch_detector.score([p])[0]) for p in paths]
    np.testing.assert_allclose([r["score"] for r in rows], alone, rtol=0, atol=ATOL)
