"""Where in the image: per-patch explanations of a score and their heat-map overlays.

D's score of an image is ``1 - mean_p sigmoid(logit_p)`` over the image's N patches, so it splits exactly into one
term per patch: patch p contributes ``1 - sigmoid(logit_p)`` (near 1: D calls the patch fake-like, near 0:
real-like), and the mean of the contributions *is* D's score. (A detector whose ``patch_aggregate`` keeps only the
least real share of its patches scores the mean of the largest contributions instead; the map shows all of them.)
A heat map spreads each contribution over the pixels of its patch and averages where patches overlap.

What the map explains and what it cannot:

- It explains **D's share** of the score, patch by patch. The logits come from the same forward pass, with the
  same per-image normalisation group, as the score itself, so nothing is approximated.
- Each patch's logit still depends on the other patches of the same image (they share its normalisation
  statistics), so a contribution says "this patch looked unusual *relative to the rest of this image*".
- It cannot show the **per-image statistics** view (``score_mode`` ``fused`` / ``stats-only``): those statistics
  are global properties of the whole image (contrast, brightness, texture energy) with no position. For a fused
  score :class:`Explanation` therefore reports both views on the fused z-scale and which one set the score
  (fusion takes the larger); when the statistics view decided it, the heat map does not explain the decision.
- Pixels no patch covered have no value (transparent in the overlay).

A saved heat map (:func:`save_overlay`, ``score --heatmaps``) carries a legend strip under the picture: the colour
ramp with its meaning, the score, and which view set it (:func:`caption`), so a map that is uniformly blue because
the statistics view flagged the image says so on its face; the same text is in the PNG's ``Description``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import score_modes
from ..score_modes import ScoreModeSpec

if TYPE_CHECKING:
    from .stats_model import StatsModel

#: Which view set a fused score: the larger of the two z-scores wins
#: (:meth:`discopatch.inference.stats_model.StatsModel.fuse`).
SOURCES = ("discriminator", "statistics")


@dataclass
class Explanation:
    """One image's score, split into D's per-patch contributions and, for fused detectors, the two views.

    ``corners`` are the patches' top-left ``(y, x)`` in the preprocessed image (``image``, the square the model
    sees after resizing), ``patch_size`` their side. ``contributions[i] = 1 - sigmoid(logit_i)`` in float64; their
    mean is ``d_score`` (with a ``patch_aggregate`` other than ``mean``: the mean of the largest ones it keeps).
    ``score`` is the detector's configured score (what ``Detector.score`` returns).
    For ``fused`` detectors ``d_z`` and ``stats_z`` are the two views on the fused robust z-scale (``score`` is
    their maximum) and ``source`` names the larger; ``stats-only`` detectors have ``source="statistics"`` and the
    patch contributions do not enter their score; ``d-only`` detectors have ``source="discriminator"``.
    """

    image: np.ndarray
    corners: np.ndarray
    patch_size: int
    contributions: np.ndarray
    d_score: float
    score: float
    score_mode: str
    source: str
    d_z: float | None = None
    stats_z: float | None = None
    stats_score: float | None = None

    def heatmap(self) -> np.ndarray:
        """``(S, S)`` float64: each pixel's mean contribution over the patches covering it, NaN where none does."""
        h, w = self.image.shape[:2]
        total = np.zeros((h, w), dtype=np.float64)
        count = np.zeros((h, w), dtype=np.int64)
        p = self.patch_size
        for (y, x), c in zip(self.corners.tolist(), self.contributions.tolist()):
            total[y : y + p, x : x + p] += c
            count[y : y + p, x : x + p] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the image itself left out; ``image_size`` is its side)."""
        return {
            "image_size": int(self.image.shape[0]),
            "score": self.score,
            "score_mode": self.score_mode,
            "source": self.source,
            "d_score": self.d_score,
            "d_z": self.d_z,
            "stats_z": self.stats_z,
            "stats_score": self.stats_score,
            "patch_size": self.patch_size,
            "corners": self.corners.tolist(),
            "contributions": self.contributions.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], image: np.ndarray) -> Explanation:
        """Rebuild :meth:`to_dict`'s output around ``image`` (the preprocessed image, or a stand-in of its size)."""
        fields = {k: data[k] for k in ("score", "score_mode", "source", "d_score", "d_z", "stats_z", "stats_score")}
        corners = np.asarray(data["corners"], dtype=np.int64).reshape(-1, 2)
        contributions = np.asarray(data["contributions"], dtype=np.float64)
        return cls(image=image, corners=corners, patch_size=int(data["patch_size"]), contributions=contributions,
                   **fields)  # fmt: skip


def _colours(values: np.ndarray) -> np.ndarray:
    """Contributions in [0, 1] -> RGB uint8 on a blue (real-like) - white - red (fake-like) ramp."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    blue, white, red = np.array([40.0, 90.0, 230.0]), np.array([255.0, 255.0, 255.0]), np.array([220.0, 30.0, 30.0])
    low = blue + (white - blue) * (v / 0.5)
    high = white + (red - white) * ((v - 0.5) / 0.5)
    rgb: np.ndarray = np.where(v < 0.5, low, high).round().astype(np.uint8)
    return rgb


def overlay(explanation: Explanation, alpha: float = 0.55, min_side: int = 256) -> np.ndarray:
    """An RGB uint8 picture: the preprocessed image with its heat map blended over it.

    The colour scale is absolute (0 blue, 0.5 white, 1 red), not stretched per image, so maps of different
    images compare directly. Upscaled by a whole factor (nearest neighbour) to at least ``min_side`` pixels.
    """
    img = explanation.image
    rgb = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img[..., :3]
    heat = explanation.heatmap()
    covered = ~np.isnan(heat)
    colours = _colours(np.nan_to_num(heat, nan=0.0)).astype(np.float64)
    mix = np.where(covered[..., None], (1 - alpha) * rgb.astype(np.float64) + alpha * colours, rgb)
    out = mix.round().clip(0, 255).astype(np.uint8)
    scale = max(1, -(-min_side // max(out.shape[:2])))
    return np.kron(out, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else out


def caption(explanation: Explanation) -> list[str]:
    """The legend's two text lines: the score (and mode), then which view set it and what the map can show."""
    e = explanation
    head = f"score {e.score:.4g} ({e.score_mode})"
    if e.source == "statistics":
        views = "" if e.d_z is None or e.stats_z is None else f": z {e.stats_z:.3g} vs D {e.d_z:.3g}"
        return [f"{head}, set by the statistics view{views}", "image-wide statistics have no position: map = D only"]
    if e.d_z is not None and e.stats_z is not None:
        return [f"{head}, set by D's patches: z {e.d_z:.3g} vs stats {e.stats_z:.3g}", "map: each patch's D value"]
    return [f"{head}, set by D's patches (their mean)", "map: each patch's D value"]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable where Pillow has FreeType (Pillow >= 10.1)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def legend_strip(explanation: Explanation, width: int) -> np.ndarray:
    """An RGB uint8 strip ``width`` wide: the colour ramp (0 real-like, 1 fake-like) and :func:`caption`."""
    from PIL import Image, ImageDraw

    size = max(10, width // 26)
    line, pad = size + 4, max(4, width // 64)
    ramp_h = max(8, size)
    strip = Image.new("RGB", (width, pad + ramp_h + 2 * pad + 3 * line), (255, 255, 255))
    ramp = _colours(np.linspace(0.0, 1.0, width - 2 * pad))[None].repeat(ramp_h, axis=0)
    strip.paste(Image.fromarray(ramp), (pad, pad))
    draw, font = ImageDraw.Draw(strip), _font(size)
    y = pad + ramp_h + pad // 2
    right = "fake-like 1"
    draw.text((pad, y), "0 real-like", fill=(0, 0, 0), font=font)
    draw.text((width // 2, y), "0.5", fill=(0, 0, 0), font=font, anchor="ma")
    draw.text((width - pad - draw.textlength(right, font=font), y), right, fill=(0, 0, 0), font=font)
    for i, text in enumerate(caption(explanation)):
        draw.text((pad, y + (i + 1) * line + pad), text, fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def annotated_overlay(explanation: Explanation, alpha: float = 0.55) -> np.ndarray:
    """:func:`overlay` with :func:`legend_strip` below it."""
    picture = overlay(explanation, alpha)
    return np.concatenate([picture, legend_strip(explanation, picture.shape[1])], axis=0)


def overlay_png(explanation: Explanation, alpha: float = 0.55) -> bytes:
    """:func:`annotated_overlay` as PNG bytes, with :func:`caption` as the PNG's ``Description`` text."""
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Description", " / ".join(caption(explanation)))
    buf = io.BytesIO()
    Image.fromarray(annotated_overlay(explanation, alpha)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_overlay(explanation: Explanation, path: str, alpha: float = 0.55) -> None:
    """Write :func:`overlay_png` to ``path`` (``score --heatmaps``; the service's heat-map route sends the same)."""
    with open(path, "wb") as f:
        f.write(overlay_png(explanation, alpha))


def explanations(
    stack: np.ndarray,
    corners: np.ndarray,
    patch_size: int,
    contributions: np.ndarray,
    d_scores: np.ndarray,
    score_mode: str,
    stats_model: StatsModel | None = None,
    stats_scores: np.ndarray | None = None,
) -> list[Explanation]:
    """One :class:`Explanation` per image of a scoring pass: its patch ``corners`` ``(B, N, 2)``, per-patch
    ``contributions`` ``(B, N)``, D's scores and, for fused / statistics-only detectors, the statistics model and
    its Mahalanobis scores from the same pass (the fused value is computed as the detector's score is)."""
    spec = score_modes.get(score_mode)
    out = []
    for i in range(len(stack)):
        d = d_scores[i : i + 1]
        if stats_model is not None and stats_scores is not None:
            extra = _statistics_views(spec, d, stats_scores[i : i + 1], stats_model.fusion)
        else:
            extra = {"score": float(spec.combine_numpy(d, None, None)[0]), "source": "discriminator"}
        out.append(
            Explanation(
                image=stack[i],
                corners=corners[i],
                patch_size=patch_size,
                contributions=contributions[i],
                d_score=float(d[0]),
                score_mode=score_mode,
                **extra,
            )
        )
    return out


def _statistics_views(spec: ScoreModeSpec, d: np.ndarray, s: np.ndarray, fusion: np.ndarray) -> dict[str, Any]:
    """One image's score, both views on the fused z-scale and which view set it, by the mode's own combiner (the
    score equals the detector's): the statistics when the mode ignores D or their z-score is the larger."""
    d_z, s_z = (float(v[0]) for v in score_modes.robust_z(d, s, fusion))
    return {
        "score": float(spec.combine_numpy(d, s, fusion)[0]),
        "source": "statistics" if not spec.uses_discriminator or s_z > d_z else "discriminator",
        "d_z": d_z,
        "stats_z": s_z,
        "stats_score": float(s[0]),
    }
