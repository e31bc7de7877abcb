"""The corruption implementations and the name -> function registry :data:`_FUNCS`.

Each function takes a float (H, W, 3) image in [0, 1], the severity's parameters (one entry of
:data:`~discopatch.data.corruptions.tables.PARAMS`), the generator and the pixel-length scale ``s``, and returns a
float image (clipped and quantised by the caller).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from .kernels import (
    _centre_zoom,
    _frost_texture,
    _gaussian,
    _glass_permutation,
    _motion_blur,
    _plasma_for,
    _to_uint8,
    _zoom_matrix,
)

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights, as OpenCV's RGB2GRAY used by the reference


_Fn = Callable[[np.ndarray, Any, np.random.Generator, float], np.ndarray]


def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    return x + rng.normal(0.0, c, size=x.shape)


def _shot_noise(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    return rng.poisson(x * c) / c


def _impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    # Salt-and-pepper per element (each channel independently), half salt and half pepper.
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    out: np.ndarray = x.copy()
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return out


def _defocus_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator, s: float) -> np.ndarray:
    radius, alias_sigma = c[0] * s, c[1]
    # The reference anti-aliases the disk with a 3x3 Gaussian (5x5 for radii above 8 px).
    aa_half = 1 if radius <= 8 else 2
    half = math.ceil(radius) + aa_half
    coords = np.arange(-half, half + 1, dtype=np.float64)
    disk = (coords[:, None] ** 2 + coords[None, :] ** 2 <= radius * radius).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-(np.arange(-aa_half, aa_half + 1) ** 2) / (2.0 * alias_sigma**2))
    g /= g.sum()
    kernel = ndimage.convolve1d(ndimage.convolve1d(disk, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return ndimage.correlate(x, kernel[:, :, None], mode="mirror")


def _glass_blur(x: np.ndarray, c: tuple[float, int, int], rng: np.random.Generator, s: float) -> np.ndarray:
    sigma = c[0] * s
    delta = max(1, round(c[1] * s))
    iterations = int(c[2])
    h, w = x.shape[:2]
    # The reference quantises to uint8 by truncation between the two blurs.
    y = np.floor(np.clip(_gaussian(x, sigma), 0.0, 1.0) * 255.0) / 255.0
    perm = _glass_permutation(h, w, delta, iterations, rng)
    y = y.reshape(h * w, -1)[perm].reshape(x.shape)
    return _gaussian(y, sigma)


def _motion_blur_fn(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator, s: float) -> np.ndarray:
    angle = rng.uniform(-45.0, 45.0)
    return _motion_blur(x, c[0] * s, c[1] * s, angle)


@functools.lru_cache(maxsize=64)
def _zoom_stacks(h: int, w: int, stop: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Cached row/column zoom matrices for all zoom-blur factors (they depend only on size and params)."""
    factors = np.arange(1.0, stop, step)  # same float arange as the reference, e.g. 1.00 .. 1.05
    rmats = np.stack([_zoom_matrix(h, f) for f in factors])  # (Z, H, H)
    cmats = np.stack([_zoom_matrix(w, f) for f in factors])  # (Z, W, W)
    rmats.flags.writeable = False
    cmats.flags.writeable = False
    return rmats, cmats


def _zoom_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator, s: float) -> np.ndarray:
    h, w, ch = x.shape
    rmats, cmats = _zoom_stacks(h, w, float(c[0]), float(c[1]))
    n_zoom = rmats.shape[0]
    tmp = np.matmul(rmats, x.reshape(h, w * ch)).reshape(n_zoom, h, w, ch)
    zoomed = np.matmul(cmats[:, None], tmp)  # (Z, H, W, C)
    result: np.ndarray = (x + zoomed.sum(axis=0)) / (n_zoom + 1)
    return result


def _snow(x: np.ndarray, c: tuple[float, ...], rng: np.random.Generator, s: float) -> np.ndarray:
    mean, std, zoom, thresh, radius, sigma, keep = c
    h, w = x.shape[:2]
    layer = rng.normal(mean, std, size=(h, w))
    layer = _centre_zoom(layer, max(1.0, zoom * s))
    layer[layer < thresh] = 0.0
    layer = np.floor(np.clip(layer, 0.0, 1.0) * 255.0) / 255.0  # reference passes it through 8-bit PNG
    angle = rng.uniform(-135.0, -45.0)
    layer = np.rint(_motion_blur(layer, radius * s, sigma * s, angle) * 255.0) / 255.0
    layer = layer[..., None]
    gray = (x @ _LUMA)[..., None]
    x = keep * x + (1.0 - keep) * np.maximum(x, gray * 1.5 + 0.5)
    return x + layer + layer[::-1, ::-1]


def _frost(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator, s: float) -> np.ndarray:
    h, w = x.shape[:2]
    return c[0] * x + c[1] * _frost_texture(h, w, rng)


def _fog(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator, s: float) -> np.ndarray:
    strength, decay = c
    h, w = x.shape[:2]
    peak = float(x.max())
    fogged = x + strength * _plasma_for(h, w, decay, rng)[..., None]
    return fogged * peak / (peak + strength)


def _brightness(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    # Adding c to HSV value keeps hue and saturation, i.e. rescales RGB by V'/V (gray V' for black).
    v = x.max(axis=2, keepdims=True)
    v_new = np.minimum(v + c, 1.0)
    ratio = np.divide(v_new, v, out=np.zeros_like(v), where=v > 0)
    result: np.ndarray = np.where(v > 0, x * ratio, v_new)
    return result


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    means = x.mean(axis=(0, 1), keepdims=True)
    result: np.ndarray = (x - means) * c + means
    return result


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix ``A`` with ``A @ [p, 1] = q`` for three (row, col) point pairs."""
    design = np.hstack([src, np.ones((3, 1))])
    result: np.ndarray = np.linalg.solve(design, dst).T
    return result


def _elastic_transform(x: np.ndarray, c: tuple[float, float, float], rng: np.random.Generator, s: float) -> np.ndarray:
    alpha, sigma, affine = c[0] * s * s, c[1] * s, c[2] * s
    h, w, ch = x.shape
    # Random affine: jitter three points around the centre and warp the image accordingly.
    cy, cx = h // 2, w // 2
    sq = min(h, w) // 3
    src = np.array([[cy + sq, cx + sq], [cy + sq, cx - sq], [cy - sq, cx - sq]], dtype=np.float64)
    dst = src + rng.uniform(-affine, affine, size=src.shape)
    fwd = _affine_from_points(src, dst)
    inv_lin = np.linalg.inv(fwd[:, :2])
    offset = -inv_lin @ fwd[:, 2]
    warped = np.stack(
        [ndimage.affine_transform(x[..., k], inv_lin, offset=offset, order=1, mode="mirror") for k in range(ch)],
        axis=-1,
    )
    # Smooth random displacement field.
    dx = _gaussian(rng.uniform(-1.0, 1.0, size=(h, w)), sigma, mode="reflect", truncate=3.0) * alpha
    dy = _gaussian(rng.uniform(-1.0, 1.0, size=(h, w)), sigma, mode="reflect", truncate=3.0) * alpha
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    coords = np.stack([rows + dy, cols + dx])
    return np.stack(
        [ndimage.map_coordinates(warped[..., k], coords, order=1, mode="reflect") for k in range(ch)], axis=-1
    )


def _pixelate(x: np.ndarray, c: float, rng: np.random.Generator, s: float) -> np.ndarray:
    h, w = x.shape[:2]
    img = Image.fromarray(_to_uint8(x))
    small = img.resize((max(1, int(w * c)), max(1, int(h * c))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BOX), dtype=np.float64) / 255.0


def _jpeg_compression(x: np.ndarray, c: int, rng: np.random.Generator, s: float) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(x)).save(buf, format="JPEG", quality=int(c))
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


_FUNCS: dict[str, _Fn] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur_fn,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
