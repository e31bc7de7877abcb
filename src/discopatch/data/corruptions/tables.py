"""Names, families and the two per-severity parameter tables of the benchmark corruptions.

Pure data: the tables are transcribed from the reference scripts named in :data:`PARAM_SOURCES`; how they are
selected and rescaled for an image's size is described in :mod:`discopatch.data.corruptions`.
"""

from __future__ import annotations

from typing import Any

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
"""The benchmark corruptions: the fifteen of Hendrycks & Dietterich (2019) in their order. Everything else (the
benchmark grid, report texts, counts) derives from this tuple; a new corruption is added here, in
:data:`CORRUPTION_FAMILIES`, in both :data:`PARAMS` tables (with :data:`PARAM_FIELDS`) and in ``functions._FUNCS``."""

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
"""The severities every corruption has (1 = mildest); the benchmark's covariate grid is CORRUPTIONS x SEVERITIES."""

CORRUPTION_FAMILIES: dict[str, str] = {
    "gaussian_noise": "noise",
    "shot_noise": "noise",
    "impulse_noise": "noise",
    "defocus_blur": "blur",
    "glass_blur": "blur",
    "motion_blur": "blur",
    "zoom_blur": "blur",
    "snow": "weather",
    "frost": "weather",
    "fog": "weather",
    "brightness": "weather",
    "contrast": "digital",
    "elastic_transform": "digital",
    "pixelate": "digital",
    "jpeg_compression": "digital",
}
"""Family of each corruption as grouped in the paper (noise / blur / weather / digital)."""

PARAM_SOURCES: dict[str, str] = {
    "cifar": "https://github.com/hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py",
    "imagenet": "https://github.com/hendrycks/robustness ImageNet-C/create_c/make_imagenet_c.py",
}
"""Where each parameter table was transcribed from."""

REFERENCE_SIZE: dict[str, int] = {"cifar": 32, "imagenet": 224}
"""Image side length the pixel-unit parameters of each table were designed for."""

PARAM_FIELDS: dict[str, tuple[str, ...]] = {
    "gaussian_noise": ("std",),
    "shot_noise": ("photons_per_unit",),
    "impulse_noise": ("fraction",),
    "defocus_blur": ("disk_radius_px", "antialias_sigma"),
    "glass_blur": ("sigma_px", "max_delta_px", "iterations"),
    "motion_blur": ("radius_px", "sigma_px"),
    "zoom_blur": ("max_zoom_exclusive", "zoom_step"),
    "snow": ("mean", "std", "zoom_px", "threshold", "blur_radius_px", "blur_sigma_px", "image_weight"),
    "frost": ("image_weight", "frost_weight"),
    "fog": ("strength", "wibble_decay"),
    "brightness": ("value_shift",),
    "contrast": ("factor",),
    "elastic_transform": ("alpha_px", "sigma_px", "affine_px"),
    "pixelate": ("downscale_factor",),
    "jpeg_compression": ("quality",),
}
"""Meaning of the entries of each per-severity parameter (a scalar is a 1-tuple here)."""

# Numbers below are transcribed from the two reference scripts named in PARAM_SOURCES (Apache-2.0 code
# by D. Hendrycks); only the values are reused. Elastic values keep the reference's factor form
# (32 * f for CIFAR, 244 * f for ImageNet, where the reference itself notes 244 should have been 224).
PARAMS: dict[str, dict[str, tuple[Any, ...]]] = {
    "cifar": {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "zoom_blur": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
        "snow": (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ),
        "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "elastic_transform": (
            (32 * 0, 32 * 0, 32 * 0.08),
            (32 * 0.05, 32 * 0.2, 32 * 0.07),
            (32 * 0.08, 32 * 0.06, 32 * 0.06),
            (32 * 0.1, 32 * 0.04, 32 * 0.05),
            (32 * 0.1, 32 * 0.03, 32 * 0.03),
        ),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        "jpeg_compression": (80, 65, 58, 50, 40),
    },
    "imagenet": {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
        "snow": (
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ),
        "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
        "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "elastic_transform": (
            (244 * 2, 244 * 0.7, 244 * 0.1),
            (244 * 2, 244 * 0.08, 244 * 0.2),
            (244 * 0.05, 244 * 0.01, 244 * 0.02),
            (244 * 0.07, 244 * 0.01, 244 * 0.02),
            (244 * 0.12, 244 * 0.01, 244 * 0.02),
        ),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (25, 18, 15, 10, 7),
    },
}
"""Per-severity parameters (index 0 = severity 1) of the two reference tables; see PARAM_FIELDS."""
