"""Full-scale evaluation inputs: OpenOOD-style image lists, the ImageNet-C folder layout, streamed scoring.

* An **image list** has one image per line, ``relative/path [label]``, with paths relative to a data root (the
  OpenOOD v1.5 ``benchmark_imglist`` files). Blank lines and ``#`` comments are skipped; labels are ignored.
* **ImageNet-C** is ``ROOT/<corruption>/<severity 1-5>/<class>/<image>``; every corruption x severity folder
  becomes one OOD set, and the mean over all of them is reported as well.
* Sets are scored in chunks straight from the files (:meth:`~discopatch.detector.Detector.score_items`), so
  50,000-image sets never sit in memory as one 10 GB array.

By default every set goes through the detector's own preprocessing, identical for ID and OOD. With
``official=True`` the official code's pipelines are mimicked instead (docs/METHOD.md, section 5): ID images
are short-side-resized with Lanczos and centre-cropped, OOD and ImageNet-C images are squashed to the square
with bilinear resampling (ImageNet-C's 224 px JPEGs are thereby upsampled). That reproduces the published setting
but is **not leak-free**: ID and OOD then differ in their resampling, which a covariate-shift detector can see.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import PreprocessConfig
from ..data.images import list_images
from ..detector import Detector
from ..errors import ConfigError, InputNotFoundError
from ..results import ImageResult
from .evaluate import EvaluationResult, evaluate_results

OFFICIAL_LABEL = (
    "official pipelines (ID: resize_crop Lanczos; OOD and ImageNet-C: bilinear squash) - NOT leak-free: ID and "
    "OOD are preprocessed differently"
)
MATCHED_LABEL = "matched pipeline (ID and OOD preprocessed identically)"


@dataclass
class Source:
    """A named set of image files; ``kind`` is ``id``, ``ood`` or ``imagenet-c`` (chooses the official pipeline)."""

    name: str
    files: list[Path]
    names: list[str]
    kind: str = "ood"


def parse_list_line(line: str) -> str | None:
    """``relative/path [label]`` -> the path; ``None`` for blank and comment lines. Paths may contain spaces."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split()
    if len(parts) >= 2 and parts[-1].lstrip("-").isdigit():
        return text[: text.rstrip().rfind(parts[-1])].rstrip()
    return text


def read_image_list(list_file: str | os.PathLike[str]) -> list[str]:
    """The paths of an OpenOOD-style list, as written (relative to whatever data root the caller uses)."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise InputNotFoundError(f"no such image list: {list_file}")
    paths = [p for p in (parse_list_line(line) for line in list_file.read_text().splitlines()) if p is not None]
    if not paths:
        raise ConfigError(f"{list_file}: the image list is empty")
    return paths


def list_source(
    name: str, list_file: str | os.PathLike[str], data_root: str | os.PathLike[str] | None, kind: str = "ood"
) -> Source:
    root = Path(data_root) if data_root is not None else Path(list_file).parent
    rel = read_image_list(list_file)
    return Source(name, [root / p for p in rel], rel, kind)


def folder_source(name: str, folder: str | os.PathLike[str], kind: str = "ood") -> Source:
    folder = Path(folder)
    files = list_images(folder)
    if not files:
        raise InputNotFoundError(f"no images found under {folder}")
    return Source(name, files, [str(f.relative_to(folder)) for f in files], kind)


def source_from_spec(
    spec: str, data_root: str | os.PathLike[str] | None, kind: str = "ood", roots: dict[str, str] | None = None
) -> Source:
    """``NAME=PATH`` (or a bare PATH): a folder of images, or a list file resolved against ``data_root``.

    ``roots`` maps a set name to its own data root (OpenOOD keeps Textures under ``images_classic/``).
    """
    from .evaluate import parse_named_dir

    name, path = parse_named_dir(spec)
    data_root = (roots or {}).get(name, data_root)
    if Path(path).is_dir():
        return folder_source(name, path, kind)
    if Path(path).is_file():
        if Path(path).suffix.lower() in (".txt", ".lst", ".list", ".csv", ""):
            return list_source(Path(name).stem if "=" not in spec else name, path, data_root, kind)
        raise ConfigError(f"{path}: expected a folder or an image list (.txt), got a {Path(path).suffix} file")
    raise InputNotFoundError(f"no such folder or image list: {path}")


def imagenet_c_sources(root: str | os.PathLike[str]) -> list[Source]:
    """One source per ``corruption/severity`` folder under ``root``, sorted by corruption then severity."""
    root = Path(root)
    if not root.is_dir():
        raise InputNotFoundError(f"no such ImageNet-C folder: {root}")
    out = []
    for corruption in sorted(p for p in root.iterdir() if p.is_dir()):
        severities = [p for p in corruption.iterdir() if p.is_dir() and p.name.isdigit()]
        for sev in sorted(severities, key=lambda p: int(p.name)):
            files = list_images(sev)
            if files:
                name = f"{corruption.name}/{sev.name}"
                out.append(Source(name, files, [str(f.relative_to(root)) for f in files], "imagenet-c"))
    if not out:
        raise ConfigError(f"{root}: no <corruption>/<severity>/ folders with images (expected the ImageNet-C layout)")
    return out


def pipeline_config(base: PreprocessConfig, kind: str, official: bool) -> PreprocessConfig:
    """The preprocessing a set of this ``kind`` gets; identical for all kinds unless ``official``."""
    if not official:
        return base
    return dataclasses.replace(base, resize="resize_crop" if kind == "id" else "squash")


def evaluate_sources(
    det: Detector,
    id_source: Source,
    ood_sources: Iterable[Source],
    official: bool = False,
    progress: bool = False,
    chunk_size: int = 256,
) -> EvaluationResult:
    """AUROC / FPR@95 / AUPR per OOD source, ID scored once; adds a ``mean over ImageNet-C`` row if present."""
    base = det.preprocess_config

    def scored(src: Source, desc: str) -> Iterable[ImageResult]:
        cfg = pipeline_config(base, src.kind, official)
        return det.score_items(src.files, preprocess=cfg, chunk_size=chunk_size, progress=progress, desc=desc)

    sources = list(ood_sources)
    res = evaluate_results(
        det, id_source.name, scored(id_source, f"ID {id_source.name}"), ((s.name, scored(s, s.name)) for s in sources)
    )
    res.meta["pipeline"] = OFFICIAL_LABEL if official else MATCHED_LABEL
    corr_rows = [res.rows[s.name] for s in sources if s.kind == "imagenet-c"]
    if corr_rows:
        keys = [k for k, v in corr_rows[0].items() if isinstance(v, float)]
        mean: dict[str, float] = {k: float(np.mean([r[k] for r in corr_rows])) for k in keys}
        mean["n_ood"] = sum(int(r["n_ood"]) for r in corr_rows)
        res.rows[f"ImageNet-C mean ({len(corr_rows)} corruption x severity sets)"] = mean
    return res
