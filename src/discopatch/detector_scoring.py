"""What a detector with a trained D does, however D got there (``fit`` or ``load``): score, explain, per image.

:class:`ScoringDetector` is the scoring half of :class:`~discopatch.detector.Detector`, which adds construction,
training, calibration and persistence. Here lives **the one per-image scoring path**: :meth:`score_decoded`
(decoded images and decoding errors -> one :class:`~discopatch.results.ImageResult` each, explanations optional,
from one forward pass) and :meth:`score_items` (decodes inputs in chunks for it), on which ``predict``,
``discopatch score``, ``evaluate``, the service and the folder watcher are built.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .calibration import Calibration
from .config import ModelConfig, Precision, PreprocessConfig, Preset
from .data.images import preprocess_many
from .data.sources import Images, ImageSet, image_stack, input_list
from .errors import NotFittedError
from .inference.engine import ResolvedEngine, ScoringEngine, make_engine, score_array, scores_from_logits
from .inference.explain import Explanation, explanations
from .inference.stats_model import StatsModel
from .log import progress_bar
from .model import Discriminator
from .patches import content_corners
from .results import ImageResult
from .score_modes import ScoreModeSpec, patches_kept
from .score_modes import get as get_score_mode

#: A decoded input: ``(preprocessed image, None)`` or ``(None, why it could not be read)``.
Decoded = tuple[np.ndarray | None, str | None]


class ScoringDetector:
    """Scoring with a trained D, its statistics model and calibration; the attributes are set by
    :class:`~discopatch.detector.Detector` (construction, ``fit``, ``load``)."""

    preset: Preset
    seed: int
    device: torch.device
    batch_size: int
    precision: Precision
    engine: ResolvedEngine
    _engine: ScoringEngine | None
    discriminator: Discriminator | None
    calibration: Calibration | None
    stats_model: StatsModel | None
    #: Hash of the saved files (:func:`~discopatch.artifact.files.detector_id`); ``None`` until saved or loaded.
    detector_id: str | None

    # ------------------------------------------------------------------ properties
    @property
    def model_config(self) -> ModelConfig:
        return self.preset.model

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return self.preset.preprocess

    @property
    def n_patches(self) -> int:
        return self.preset.test_patches

    @property
    def patches_kept(self) -> int:
        """How many of an image's test patches D's score averages: all (the paper's mean) or the least real share
        of the preset's ``patch_aggregate``."""
        return patches_kept(self.preset.patch_aggregate, self.n_patches)

    @property
    def threshold(self) -> float | None:
        return None if self.calibration is None else self.calibration.threshold

    def score_with_engine(self, engine: ScoringEngine, stack: np.ndarray) -> np.ndarray:
        """The configured score of a preprocessed stack computed by ``engine``: D alone or fused with statistics."""
        return self._score_parts(engine, stack)[0]

    @property
    def score_spec(self) -> ScoreModeSpec:
        """The registry entry of the preset's score mode (:mod:`discopatch.score_modes`)."""
        return get_score_mode(self.preset.score_mode)

    def _require_stats(self) -> StatsModel:
        """The statistics model, which the score mode needs; :class:`NotFittedError` before it is fitted."""
        if self.stats_model is None:
            raise NotFittedError(
                f"score_mode {self.preset.score_mode!r} needs the statistics model; call fit() or fit_statistics()"
            )
        return self.stats_model

    def _score_parts(self, engine: ScoringEngine, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The configured score and, when the mode uses the statistics, D's score from the same pass (else None)."""
        spec = self.score_spec
        if not spec.needs_statistics:
            return spec.combine_numpy(engine.score(stack, self.batch_size), None, None), None
        sm = self._require_stats()
        d, f = engine.score_with_statistics(stack, self.batch_size)
        return spec.combine_numpy(d, sm.mahalanobis(f), sm.fusion), d

    def _score_stack(self, stack: np.ndarray) -> np.ndarray:
        return self.score_with_engine(self.scoring_engine(), stack)

    def explain(self, images: Images) -> list[Explanation]:
        """Per image: patch corners, each patch's D contribution and, when fused, which view set the score.

        The contributions (``1 - sigmoid(logit)`` per patch) come from the same forward pass and per-image
        normalisation group as :meth:`score`, and their mean is D's score exactly (with a ``patch_aggregate``: the
        mean of the largest ones kept). They explain D's share only:
        the per-image statistics of a fused score are global and have no position (:mod:`discopatch.inference.explain`).
        """
        return self._explain_stack(self._stack(images))

    def _explain_stack(self, stack: np.ndarray) -> list[Explanation]:
        engine = self.scoring_engine()
        mode = self.preset.score_mode
        if not self.score_spec.needs_statistics:
            logits, feats = engine.batched_logits(stack, self.batch_size), None
        else:
            self._require_stats()
            logits, feats = engine.logits_with_statistics(stack, self.batch_size)
        contributions = 1.0 - torch.sigmoid(logits.double()).numpy()
        p = self.model_config.patch_size
        corners = content_corners(stack, p, self.n_patches, self.seed)
        sm = self.stats_model if feats is not None else None
        s = None if sm is None or feats is None else sm.mahalanobis(feats)
        d_scores = scores_from_logits(logits, self.patches_kept)
        return explanations(stack, corners, p, contributions, d_scores, mode, sm, s)

    # ------------------------------------------------------------------ scoring
    def require_model(self) -> Discriminator:
        """The trained discriminator; raises :class:`NotFittedError` if the detector was neither fitted nor loaded."""
        if self.discriminator is None:
            raise NotFittedError("the detector has not been trained or loaded; call fit() or Detector.load()")
        return self.discriminator

    def score(self, images: Images, progress: bool = False) -> np.ndarray:
        """OOD score per image, float64, higher = more OOD. Unreadable inputs raise ``ImageReadError``."""
        return self._score_stack(self._stack(images, progress))

    def score_preprocessed(self, stack: np.ndarray, pool_images: int = 1) -> np.ndarray:
        """Scores for images already passed through :func:`~discopatch.data.images.preprocess`."""
        if pool_images == 1:
            return self._score_stack(stack)
        D = self.require_model()  # the leaky pooled ablation exists in PyTorch only
        kept = self.patches_kept
        return score_array(D, stack, self.n_patches, self.seed, self.device, self.batch_size, pool_images, kept)

    def scoring_engine(self) -> ScoringEngine:
        """The engine behind :meth:`score` (``self.engine``), built once per discriminator object.

        An ONNX engine is a snapshot of D's weights; it is rebuilt when ``discriminator`` is replaced or its
        parameters are modified in place (tracked through their version counters).
        """
        D = self.require_model()
        eng = self._engine
        kept = self.patches_kept
        key = (id(D), self.n_patches, kept, tuple(p._version for p in D.parameters()))
        if eng is None or getattr(eng, "source_key", None) != key:
            eng = make_engine(
                self.engine, D, self.n_patches, self.seed, self.device, precision=self.precision, kept=kept
            )
            eng.source_key = key  # type: ignore[attr-defined]
            self._engine = eng
        eng.seed = self.seed
        return eng

    def _stack(self, images: Images | ImageSet, progress: bool = False) -> np.ndarray:
        return image_stack(images, self.preset.preprocess, progress)

    def score_decoded(
        self, sources: Sequence[str], decoded: Sequence[Decoded], explain: bool = False
    ) -> list[ImageResult]:
        """The one per-image scoring step: decoded inputs -> one :class:`~discopatch.results.ImageResult` each.

        ``decoded[i]`` is ``(image, None)`` for an image already passed through
        :func:`~discopatch.data.images.preprocess` or ``(None, error)`` for an input that could not be read; its
        result keeps that error and the others are scored together in one call of the engine (scores are per
        image, so an unreadable neighbour changes nothing). p-values and ``is_ood`` come from the calibration when
        there is one. ``explain=True`` attaches each image's :class:`Explanation`, computed in the same forward
        pass as its score (the service and ``score --heatmaps`` use this, so a heat map never needs a second pass).
        """
        if len(sources) != len(decoded):
            raise ValueError(f"{len(sources)} sources for {len(decoded)} decoded inputs")
        self.require_model()
        ok = [i for i, (img, _) in enumerate(decoded) if img is not None]
        scores: Sequence[float] | np.ndarray = []
        d_scores: Sequence[float] | np.ndarray | None = None
        explanations: list[Explanation] = []
        if ok:
            stack = np.stack([decoded[i][0] for i in ok])  # type: ignore[misc]
            if explain:
                explanations = self._explain_stack(stack)
                scores, d_scores = [e.score for e in explanations], [e.d_score for e in explanations]
            else:
                scores, d_scores = self._score_parts(self.scoring_engine(), stack)
        cal = self.calibration
        p_values = cal.p_values(np.asarray(scores, dtype=np.float64)) if cal is not None and ok else None
        out = [ImageResult(str(src), error=err or "unreadable input") for src, (_, err) in zip(sources, decoded)]
        for n, i in enumerate(ok):
            score = float(scores[n])
            out[i] = ImageResult(
                source=str(sources[i]),
                score=score,
                d_score=score if d_scores is None else float(d_scores[n]),
                p_value=None if p_values is None else float(p_values[n]),
                is_ood=None if cal is None else bool(score > cal.threshold),
                explanation=explanations[n] if explain else None,
            )
        return out

    def score_items(
        self,
        items: Images | ImageSet,
        *,
        preprocess: PreprocessConfig | None = None,
        chunk_size: int | None = None,
        explain: bool = False,
        progress: bool = False,
        desc: str = "scoring",
    ) -> Iterator[ImageResult]:
        """Decode and score inputs ``chunk_size`` at a time, yielding one :class:`ImageResult` per input in order.

        ``items`` is what :meth:`predict` takes: a folder or file path (expanded like ``discopatch score``), a
        uint8 stack, a list of paths, arrays, bytes or Pillow images in any mix, or an :class:`ImageSet` (already
        preprocessed; its failed inputs follow the others). A file is named by its path, an in-memory input
        ``#i``. ``chunk_size`` (``None``: all at once) bounds memory for long lists; it never changes which
        images are normalised together. ``preprocess`` replaces the detector's own preprocessing (only
        ``evaluate --official-pipeline`` does this). Unreadable inputs yield error results and never stop the
        others (:meth:`score_decoded`).
        """
        if isinstance(items, ImageSet):
            names = list(items.names) + [name for name, _ in items.errors]
            decoded: list[Decoded] = [(img, None) for img in items.images] + [(None, err) for _, err in items.errors]
            step = chunk_size or max(1, len(names))
            for start in range(0, len(names), step):
                yield from self.score_decoded(names[start : start + step], decoded[start : start + step], explain)
            return
        inputs = input_list(items)
        cfg = preprocess or self.preset.preprocess
        step = chunk_size or max(1, len(inputs))
        bar = progress_bar(total=len(inputs), desc=desc, unit="img", disable=not progress)
        try:
            for start in range(0, len(inputs), step):
                chunk = inputs[start : start + step]
                names = [str(x) if isinstance(x, (str, os.PathLike)) else f"#{start + i}" for i, x in enumerate(chunk)]
                pairs = [(img, err) for _, img, err in preprocess_many(chunk, cfg)]
                yield from self.score_decoded(names, pairs, explain)
                bar.update(len(chunk))
        finally:
            bar.close()

    def iter_score_files(
        self, paths: Sequence[str | os.PathLike[str]], chunk_size: int | None = None, explain: bool = False
    ) -> Iterator[dict[str, Any]]:
        """:meth:`score_items` over files, as ``discopatch score`` rows (``chunk_size`` default: the batch size).

        Rows are ``{"path", "score", "p_value", "is_ood", "error", "threshold", "model_id"}``; a fused or
        statistics-only detector adds ``"d_score"`` after ``"score"``. A file that cannot be read yields a row
        with ``score=None`` and a specific ``error``. ``explain=True`` adds ``"explanation"`` (``None`` for
        unreadable files). :func:`discopatch.results_frame` turns rows into a pandas DataFrame.
        """
        results = self.score_items(list(paths), chunk_size=chunk_size or self.batch_size, explain=explain)
        with_d = self.score_spec.needs_statistics
        for r in results:
            yield r.file_row(self.threshold, self.detector_id, with_d, explain)
