"""Where D's verdict on a cut-out image comes from: its patches on the pasted stamp, on the stamp's edge, on the
photo around it, and the same photo before the stamp was pasted.

Trains the ``small-photo`` detector as ``discopatch fit`` does on the photos protocol's 3,000 training crops, then
scores with explanations (the per-patch contributions ``1 - D(patch)`` of the score's own forward pass) the first
``--n`` ID test crops, the protocol's ``cutouts_synthetic`` images rebuilt together with each stamp's alpha mask
(the rebuild is checked to be byte-identical to the protocol's set), the same crops before pasting, and the far-OOD
sets. A patch is *on the stamp* when the mask covers at least 75 % of it, *background* at most 10 %, *edge* between.
Prints and writes JSON: image-level AUROCs of D's score, mean contribution per patch class, patch-level AUROCs
against ID patches, where each cut-out's least real patch lies, and the background patches' contributions before
and after the stamp was pasted elsewhere in the same image (same pixels, paired per image)::

    OMP_NUM_THREADS=1 python scripts/cutout_patches.py --seed 0 --out cutout_patches_s0.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from discopatch import Detector
from discopatch.benchmark.datasets import SourceDirs, load_protocol
from discopatch.benchmark.datasets.common import _cycled_order, _rng
from discopatch.benchmark.datasets.photos import _id_crop_range, _photo, _random_crop, _split_photos, photo_sources
from discopatch.benchmark.datasets.stamps import _photographic_stamp, _stamp_files, paste_stamp
from discopatch.metrics import ood_metrics

SIZE = 128  # the photos protocol's crop side
ON_STAMP, OFF_STAMP = 0.75, 0.1  # mask coverage of a patch: on the stamp >= 0.75, background <= 0.1


def cutouts_with_masks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The protocol's cut-out set (``n`` = its full size: the RNG draws depend on it) rebuilt in the same order of
    random draws as ``benchmark/datasets/stamps.py`` (its ``paste_stamp``), with each stamp's alpha mask and the crop
    before pasting."""
    dirs = SourceDirs.from_env()
    _, test = _split_photos(photo_sources(dirs))
    stamps = [s for s in (_photographic_stamp(p) for p in _stamp_files(dirs)) if s is not None]
    rng = _rng(seed, "photos", "cutouts_synthetic")
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    plain = np.empty_like(out)
    masks = np.empty((n, SIZE, SIZE), np.float64)
    bg_order = _cycled_order(len(test), n, rng)
    for i, k in enumerate(_cycled_order(len(stamps), n, rng)):
        bg_img = _photo(test[bg_order[i]])
        bg = _random_crop(bg_img, SIZE, _id_crop_range(bg_img, SIZE), rng).convert("RGBA")
        plain[i] = np.asarray(bg.convert("RGB"))
        masks[i] = paste_stamp(bg, stamps[k], rng)
        out[i] = np.asarray(bg.convert("RGB"))
    return out, masks, plain


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    return float(ood_metrics(np.asarray(id_scores), np.asarray(ood_scores))["auroc"])


def patch_texture(img: np.ndarray, corners: np.ndarray, p: int) -> np.ndarray:
    """Per patch: high-frequency energy (mean squared 4-neighbour Laplacian of the grey patch), pixel variance, and
    their ratio (high frequencies relative to contrast, which per-image normalisation leaves D to see)."""
    g = img.astype(np.float64).mean(axis=-1)
    lap = np.zeros_like(g)
    lap[1:-1, 1:-1] = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    energy = np.array([np.mean(lap[y + 1 : y + p - 1, x + 1 : x + p - 1] ** 2) for y, x in corners.tolist()])
    var = np.array([np.var(g[y : y + p, x : x + p]) for y, x in corners.tolist()])
    return np.stack([energy, var, energy / np.maximum(var, 1e-6)], axis=-1)


def per_patch(det: Detector, images: np.ndarray, masks: np.ndarray | None) -> dict[str, np.ndarray]:
    """D's score per image, each patch's contribution and texture, and (with ``masks``) its stamp coverage."""
    explained = det._explain_stack(det._stack(images))
    p = explained[0].patch_size
    out = {
        "d": np.array([e.d_score for e in explained]),
        "contrib": np.stack([e.contributions for e in explained]),
        "texture": np.stack([patch_texture(images[i], e.corners, p) for i, e in enumerate(explained)]),
    }
    if masks is not None:
        out["cover"] = np.stack(
            [np.array([masks[i, y : y + p, x : x + p].mean() for y, x in e.corners.tolist()]) for i, e in
             enumerate(explained)]
        )  # fmt: skip
    return out


def classes(cover: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "stamp": cover >= ON_STAMP,
        "edge": (cover > OFF_STAMP) & (cover < ON_STAMP),
        "background": cover <= OFF_STAMP,
    }


def background_pairs(after: dict[str, np.ndarray], before: dict[str, np.ndarray]) -> dict[str, float]:
    """Per image: mean contribution of the background patches with the stamp pasted and before (same pixels)."""

    def means(r: dict[str, np.ndarray]) -> np.ndarray:
        bg = r["cover"] <= OFF_STAMP
        return np.array([c[m].mean() if m.any() else np.nan for c, m in zip(r["contrib"], bg)])

    a, b = means(after), means(before)
    ok = ~np.isnan(a) & ~np.isnan(b)
    return {"n": int(ok.sum()), "before_mean": float(b[ok].mean()), "after_mean": float(a[ok].mean()),
            "share_more_real_after": float(np.mean(a[ok] < b[ok]))}  # fmt: skip


def measure(det: Detector, data: Any, cut: np.ndarray, masks: np.ndarray, plain: np.ndarray) -> dict[str, Any]:
    n = len(cut)
    idr, cur, pre = per_patch(det, data.id_test[:n], None), per_patch(det, cut, masks), per_patch(det, plain, masks)
    far = {k: per_patch(det, v[:n], None) for k, v in data.far_ood.items()}
    res: dict[str, Any] = {"auroc_cutouts": auroc(idr["d"], cur["d"]), "auroc_before_paste": auroc(idr["d"], pre["d"])}
    res |= {f"auroc_{k}": auroc(idr["d"], v["d"]) for k, v in far.items()}
    cls, cls_pre = classes(cur["cover"]), classes(pre["cover"])
    contrib = {"id": idr["contrib"].ravel()} | {k: cur["contrib"][m] for k, m in cls.items()}
    texture = {"id": idr["texture"].reshape(-1, 3)} | {k: cur["texture"][m] for k, m in cls.items()}
    for k, v in far.items():
        contrib[k], texture[k] = v["contrib"].ravel(), v["texture"].reshape(-1, 3)
    res["patch_contrib_mean_median_n"] = {k: [float(v.mean()), float(np.median(v)), int(v.size)] for k, v in
                                          contrib.items()}  # fmt: skip
    res["before_paste_contrib_mean_n"] = {k: [float(pre["contrib"][m].mean()), int(m.sum())] for k, m in
                                          cls_pre.items()}  # fmt: skip
    res["patch_auroc_vs_id"] = {k: auroc(contrib["id"], contrib[k]) for k in ("stamp", "edge", "background")}
    res["patch_auroc_vs_id"]["background_before_paste"] = auroc(contrib["id"], pre["contrib"][cls_pre["background"]])
    res["patch_median"] = {name: {k: float(np.median(v[:, j])) for k, v in texture.items()} for j, name in
                           enumerate(("hf_energy", "variance", "hf_over_variance"))}  # fmt: skip
    top_cover = cur["cover"][np.arange(n), cur["contrib"].argmax(axis=1)]
    res["least_real_patch_on"] = {k: float(m.mean()) for k, m in classes(top_cover).items()}
    res["patch_share"] = {k: float(m.mean()) for k, m in cls.items()}
    ic, it = idr["contrib"].ravel(), idr["texture"].reshape(-1, 3)
    res["spearman_id_contrib_vs"] = {name: float(spearmanr(ic, it[:, j])[0]) for j, name in
                                     enumerate(("hf_energy", "variance", "hf_over_variance"))}  # fmt: skip
    res["spearman_stamp_share_vs_d"] = float(spearmanr((cur["cover"] >= 0.5).mean(axis=1), cur["d"])[0])
    res["background_paired"] = background_pairs(cur, pre)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    parser.add_argument("--n", type=int, default=400, help="images per set")
    parser.add_argument("--max-steps", type=int, help="train fewer steps than the preset (a smoke run)")
    parser.add_argument("--save", type=Path, help="also save the trained detector here")
    args = parser.parse_args()
    data = load_protocol("photos", seed=args.seed)
    cut, masks, plain = cutouts_with_masks(len(data.near_ood["cutouts_synthetic"]), args.seed)
    if not np.array_equal(cut, data.near_ood["cutouts_synthetic"]):
        raise SystemExit("the rebuilt cut-outs differ from the protocol's: stamps.py changed, update this script")
    det = Detector("small-photo", seed=args.seed).fit(data.id_train, progress=False, max_steps=args.max_steps)
    if args.save:
        det.save(args.save)
    res = {"seed": args.seed, "preset": "small-photo", "max_steps": args.max_steps, "n": args.n}
    res |= measure(det, data, cut[: args.n], masks[: args.n], plain[: args.n])
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
