"""Image-processing building blocks shared by the corruptions: filters, centre zooms, line blur, procedural textures.

Every function works on float images (H, W) or (H, W, C) in [0, 1] and takes its randomness from the numpy
``Generator`` it is given; none of them knows about corruption names, severities or parameter tables.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import ndimage

#: Border handling of :func:`_gaussian` (scipy's names).
BorderMode = Literal["nearest", "reflect", "mirror", "constant", "wrap"]


def _gaussian(x: np.ndarray, sigma: float, *, mode: BorderMode = "nearest", truncate: float = 4.0) -> np.ndarray:
    """Spatial Gaussian filter that leaves a trailing channel axis alone."""
    if sigma <= 0:
        return x
    sig = (sigma, sigma, 0.0) if x.ndim == 3 else (sigma, sigma)
    return ndimage.gaussian_filter(x, sigma=sig, mode=mode, truncate=truncate)


def _zoom_matrix(n: int, factor: float) -> np.ndarray:
    """(n, n) linear-interpolation matrix that magnifies a 1-D signal by ``factor`` about its centre.

    Bilinear resampling is separable, so a 2-D centre zoom is ``R @ img @ C.T`` with one such matrix per
    axis; this lets zoom blur evaluate many zoom factors with a few matrix products.
    """
    centre = (n - 1) / 2.0
    pos = (np.arange(n) - centre) / factor + centre
    pos = np.clip(pos, 0.0, n - 1.0)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    mat = np.zeros((n, n))
    rows = np.arange(n)
    np.add.at(mat, (rows, lo), 1.0 - frac)
    np.add.at(mat, (rows, hi), frac)
    return mat


def _centre_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Magnify an (H, W) or (H, W, C) array about its centre, keeping its shape."""
    h, w = x.shape[:2]
    rmat, cmat = _zoom_matrix(h, factor), _zoom_matrix(w, factor)
    tmp = np.tensordot(rmat, x, axes=(1, 0))
    return np.moveaxis(np.tensordot(cmat, tmp, axes=(1, 1)), 0, 1)


def _motion_blur(x: np.ndarray, radius: float, sigma: float, angle_deg: float) -> np.ndarray:
    """One-sided half-Gaussian line blur (ImageMagick's motion-blur definition) with edge padding.

    Tap ``i`` (0 <= i <= 2 * ceil(radius)) samples the pixel ``i`` px away along the angle, rounded to the
    nearest pixel, with weight ``exp(-i^2 / (2 sigma^2))``; weights are normalised to sum to one.
    """
    width = 2 * math.ceil(max(radius, 0.0)) + 1
    taps = np.arange(width, dtype=np.float64)
    sigma = max(sigma, 1e-3)
    weights = np.exp(-(taps**2) / (2.0 * sigma * sigma))
    weights /= weights.sum()
    keep = weights >= 1e-6
    taps, weights = taps[keep], weights[keep] / weights[keep].sum()
    theta = math.radians(angle_deg)
    dx = np.ceil(taps * math.cos(theta) - 0.5).astype(np.intp)
    dy = np.ceil(taps * math.sin(theta) - 0.5).astype(np.intp)
    pad = int(max(np.abs(dx).max(), np.abs(dy).max()))
    h, w = x.shape[:2]
    pad_width = [(pad, pad), (pad, pad)] + [(0, 0)] * (x.ndim - 2)
    padded = np.pad(x, pad_width, mode="edge")
    out = np.zeros_like(x, dtype=np.float64)
    for wt, ox, oy in zip(weights, dx, dy, strict=True):
        out += wt * padded[pad + oy : pad + oy + h, pad + ox : pad + ox + w]
    return out


def _plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map on a periodic ``size`` x ``size`` grid (size a power of two), in [0, 1].

    Each octave adds uniform noise of amplitude ``wibble**2`` with ``wibble`` starting at 100 and divided
    by ``decay`` per octave (the amplitude schedule of the reference fog); larger decay = smoother fog.
    """
    grid = np.zeros((size, size))
    step = size
    wibble = 100.0
    while step >= 2:
        half = step // 2
        amp = wibble * wibble
        corners = grid[0::step, 0::step].copy()
        # Square step: the centre of each cell is the mean of its four corners plus noise.
        ssum = corners + np.roll(corners, -1, axis=0)
        ssum = ssum + np.roll(ssum, -1, axis=1)
        grid[half::step, half::step] = ssum / 4.0 + amp * rng.uniform(-1.0, 1.0, ssum.shape)
        centres = grid[half::step, half::step]
        # Diamond step: edge midpoints average their two corners and two neighbouring centres.
        top = corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=0)
        grid[0::step, half::step] = top / 4.0 + amp * rng.uniform(-1.0, 1.0, top.shape)
        left = corners + np.roll(corners, -1, axis=0) + centres + np.roll(centres, 1, axis=1)
        grid[half::step, 0::step] = left / 4.0 + amp * rng.uniform(-1.0, 1.0, left.shape)
        step = half
        wibble /= decay
    grid -= grid.min()
    top_val = grid.max()
    return grid / top_val if top_val > 0 else grid


def _plasma_for(h: int, w: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    size = 1 << max(1, math.ceil(math.log2(max(h, w))))
    return _plasma_fractal(size, decay, rng)[:h, :w]


def _splat(acc: np.ndarray, ys: np.ndarray, xs: np.ndarray, vals: np.ndarray) -> None:
    """Add ``vals`` at sub-pixel positions into ``acc`` with bilinear weights (anti-aliased drawing)."""
    h, w = acc.shape
    y0, x0 = np.floor(ys), np.floor(xs)
    fy, fx = ys - y0, xs - x0
    y0, x0 = y0.astype(np.intp), x0.astype(np.intp)
    flat = acc.reshape(-1)
    for oy, ox, wt in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + oy, x0 + ox
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        flat += np.bincount(yy[ok] * w + xx[ok], weights=(wt * vals)[ok], minlength=h * w)


def _frost_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Procedural frost: fractal haze plus dendritic ice needles, pale blue, (H, W, 3) in [0, 1].

    Stands in for the reference's frost photographs (not redistributable). Needles grow from a few
    nucleation sites and branch twice at +-60 degrees (the hexagonal habit of ice), with shorter and
    fainter branches each generation; the haze modulates how dense the frost looks. Needle count scales
    with the area and lengths with the short side, so the texture looks alike at every resolution.
    """
    short = min(h, w)
    haze = _plasma_for(h, w, 2.0, rng)
    n_main = max(8, round(40 * h * w / (short * short)))
    sites = rng.uniform((0.0, 0.0), (h, w), size=(max(3, n_main // 5), 2))
    starts = sites[rng.integers(0, len(sites), size=n_main)] + rng.normal(0.0, 0.08 * short, (n_main, 2))
    y0, x0 = starts[:, 0], starts[:, 1]
    ang = rng.uniform(0.0, 2.0 * np.pi, size=n_main)
    length = short * rng.uniform(0.08, 0.4, size=n_main)
    val = rng.uniform(0.6, 1.0, size=n_main)
    segments = [(y0, x0, ang, length, val)]
    for n_child, shrink, fade in ((5, (0.15, 0.4), 0.75), (2, (0.2, 0.5), 0.7)):
        n = len(length)
        at = rng.uniform(0.05, 0.95, size=(n, n_child)) * length[:, None]
        y0 = (y0[:, None] + at * np.sin(ang)[:, None]).ravel()
        x0 = (x0[:, None] + at * np.cos(ang)[:, None]).ravel()
        turn = rng.choice(np.array([-np.pi / 3.0, np.pi / 3.0]), size=(n, n_child))
        ang = (ang[:, None] + turn).ravel()
        length = (length[:, None] * rng.uniform(*shrink, size=(n, n_child))).ravel()
        val = np.repeat(val * fade, n_child)
        segments.append((y0, x0, ang, length, val))
    y0, x0, ang, length, val = (np.concatenate(parts) for parts in zip(*segments, strict=True))
    # Rasterise: sample every half pixel along each segment and splat with bilinear weights.
    n_samples = np.maximum(2, np.ceil(2 * length).astype(np.intp))
    seg_id = np.repeat(np.arange(len(length)), n_samples)
    offsets = np.arange(n_samples.sum()) - np.repeat(np.cumsum(n_samples) - n_samples, n_samples)
    t = offsets / np.repeat(n_samples - 1, n_samples) * length[seg_id]
    ys = y0[seg_id] + t * np.sin(ang[seg_id])
    xs = x0[seg_id] + t * np.cos(ang[seg_id])
    acc = np.zeros((h, w))
    _splat(acc, ys, xs, 0.5 * val[seg_id])
    acc = _gaussian(acc, 0.5, mode="constant")
    crystals = (1.0 - np.exp(-2.0 * acc)) * (0.4 + 0.6 * haze)
    grain = _gaussian(rng.random((h, w)), 0.6, mode="wrap")
    tex = np.clip(0.22 + 0.3 * haze + 0.6 * crystals + 0.3 * (grain - 0.5), 0.0, 1.0)
    tint = np.array([0.82, 0.91, 1.0])  # pale blue-white ice
    out: np.ndarray = np.clip(tex[..., None] * tint + 0.08, 0.0, 1.0)
    return out


def _glass_permutation(h: int, w: int, delta: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Index permutation produced by the reference's sequential local pixel swaps.

    The scan runs from the bottom-right to the top-left over rows/cols ``delta+1 .. side-delta`` and
    swaps each pixel with one displaced by offsets drawn from ``[-delta, delta)``. Swapping indices in a
    Python list is exact and cheap (about 0.3 us per swap), unlike swapping numpy pixels.
    """
    perm = list(range(h * w))
    rows = range(h - delta, delta, -1)
    cols = range(w - delta, delta, -1)
    n = len(rows) * len(cols)
    if n == 0:
        return np.arange(h * w)
    for _ in range(iterations):
        d = rng.integers(-delta, delta, size=(n, 2))
        offs = (d[:, 1] * w + d[:, 0]).tolist()
        k = 0
        for r in rows:
            base = r * w
            for c in cols:
                p = base + c
                q = p + offs[k]
                k += 1
                perm[p], perm[q] = perm[q], perm[p]
    return np.asarray(perm, dtype=np.intp)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
