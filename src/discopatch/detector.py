"""The user-facing detector: fit on ID images, calibrate, score, predict, save, load.

State machine (as in alibi-detect): ``fit`` trains D and the VAE on the training split and calibrates on the
held-out validation split; ``calibrate`` can be called again on any other ID images; ``score`` returns one float
per image (higher = more OOD); ``predict`` adds conformal p-values and the decision at the calibrated
false-positive rate.

Per-image outputs all come from one method, :meth:`Detector.score_decoded` (decoded images and decoding errors ->
one :class:`~discopatch.results.ImageResult` each); :meth:`Detector.score_items` decodes inputs in chunks for it,
and ``predict``, ``discopatch score``, ``evaluate``, the service and the folder watcher are built on these two.

Example::

    det = Detector(preset="small").fit("train_images/")  # the preset's 1,380 steps
    out = det.predict(["a.png", "b.jpg"])
    det.save("model/")
    det = Detector.load("model/")
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._version import __version__
from .artifact.files import PROVENANCE_KEYS, ArtifactError, detector_id, load_artifact, save_artifact, utc_now
from .budget import check_calibration_size, effective_train_config, plan_line, small_folder_warning
from .calibration import Calibration
from .config import (
    PRECISIONS,
    TORCH_PRECISIONS,
    EngineName,
    ModelConfig,
    Precision,
    PreprocessConfig,
    Preset,
    get_preset,
)
from .data.images import preprocess_many
from .data.sources import Images, ImageSet, fingerprint_inputs, image_stack, input_list, read_images, split_train_val
from .errors import NoReadableImagesError, NotFittedError
from .inference.engine import (
    ScoringEngine,
    make_engine,
    resolve_engine_name,
    score_array,
    scores_from_logits,
)
from .inference.explain import Explanation, explanations
from .inference.stats_model import StatsModel
from .log import LOGGER, progress_bar
from .model import Discriminator
from .patches import content_corners
from .results import ImageResult, Prediction, finite_or_none
from .runtime import resolve_device
from .score_modes import ScoreModeSpec
from .score_modes import get as get_score_mode
from .training.distributed import is_main_process
from .training.trainer import Trainer, TrainState

#: A decoded input: ``(preprocessed image, None)`` or ``(None, why it could not be read)``.
Decoded = tuple[np.ndarray | None, str | None]


class Detector:
    """DisCoPatch detector. Construct from a preset name or a :class:`~discopatch.config.Preset`.

    ``engine`` picks what runs D when scoring: ``torch``, ``onnx`` (ONNX Runtime, CPU, needs the ``[onnx]``
    extra) or ``auto`` (:data:`discopatch.inference.engine.DEFAULT_CPU_ENGINE` on CPU, torch on CUDA). Their scores
    agree within 1e-4 (:mod:`discopatch.inference.engine`). ``precision="bf16"`` (torch engine: a bfloat16 copy of D's
    convolutions, not autocast) and ``precision="int8"`` (ONNX engine: dynamic quantisation) trade exactness for
    speed; see docs/BENCHMARKS.md for their AUROC check.
    """

    def __init__(
        self,
        preset: str | Preset = "small",
        *,
        channels: int | None = None,
        device: str | torch.device = "auto",
        seed: int | None = None,
        test_patches: int | None = None,
        batch_size: int = 256,
        engine: EngineName = "auto",
        precision: Precision = "fp32",
    ) -> None:
        self.preset = get_preset(preset, channels) if isinstance(preset, str) else preset
        if test_patches is not None:
            self.preset = self.preset.replace(test_patches=test_patches)
        self.seed = self.preset.train.seed if seed is None else int(seed)
        get_score_mode(self.preset.score_mode)  # an unknown mode fails here, not after training
        self.device = resolve_device(device)
        self.batch_size = batch_size
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got {precision!r}")
        self.precision = precision
        # bf16 exists in the torch engine only (a bfloat16 copy of D's convolutions); int8 in the ONNX one
        # (dynamic quantisation).
        if engine == "auto" and precision != "fp32":
            engine = "torch" if precision in TORCH_PRECISIONS else "onnx"
        self.engine = resolve_engine_name(engine, self.device)
        self._engine: ScoringEngine | None = None
        self.discriminator: Discriminator | None = None
        self.calibration: Calibration | None = None
        self.training_info: dict[str, Any] = {}
        self.trainer: Trainer | None = None
        self.stats_model: StatsModel | None = None
        #: Hash of the saved files (:func:`~discopatch.artifact.files.detector_id`); ``None`` until saved or loaded.
        self.detector_id: str | None = None
        #: The resolved ``discopatch fit`` options (``fit --print-config``) this detector was trained with, saved as
        #: ``run_config`` in ``detector.json`` so the run can be repeated; provenance only, outside the digest of
        #: score-deciding settings. ``None`` when trained through the API or loaded from an artefact without one.
        self.run_config: dict[str, Any] | None = None
        #: ``created`` (UTC ISO-8601) and ``training_data`` (:func:`~discopatch.data.sources.fingerprint_inputs`),
        #: set by :meth:`fit`, saved outside the score digest and kept by load and re-save (so is the detector id).
        self.provenance: dict[str, Any] = {}

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
    def threshold(self) -> float | None:
        return None if self.calibration is None else self.calibration.threshold

    # ------------------------------------------------------------------ data
    def read(self, images: Images, progress: bool = False) -> ImageSet:
        """Inputs -> preprocessed :class:`ImageSet` (a folder, a list of paths/arrays, or a uint8 stack)."""
        return read_images(images, self.preset.preprocess, progress)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        images: Images,
        *,
        epochs: int | None = None,
        max_time: float | None = None,
        max_steps: int | None = None,
        val_fraction: float | None = None,
        target_fpr: float | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        progress: bool = True,
        channels_last: bool | None = None,
        compile: bool = False,
        amp: bool | None = None,
        callback: Callable[[TrainState, dict[str, float]], None] | None = None,
        **train_overrides: Any,
    ) -> Detector:
        """Train on ID images, then calibrate on the held-out validation split. Returns ``self``.

        Length: the preset's (``small``: 1,380 steps) with ``max_steps`` / ``epochs`` / ``max_time`` (:mod:`.budget`).
        Too few held-out images for a finite threshold raise ``TooFewCalibrationImagesError`` before training.
        ``train_overrides`` are :class:`~discopatch.config.TrainConfig` fields (``lr``, ``batch_images``, ...).
        ``callback(state, losses)`` runs after every training step (the learning curve snapshots D there).
        ``channels_last`` (default on), ``compile`` and ``amp`` (bf16 autocast; default on for CUDA) only change
        speed. Inside an initialised process group (``torchrun``) training is data-parallel and only rank 0
        calibrates.
        """
        budget: dict[str, Any] = {"epochs": epochs, "max_time": max_time, "max_steps": max_steps}  # None: not given
        overrides = dict(train_overrides) | ({} if val_fraction is None else {"val_fraction": val_fraction})
        tcfg = effective_train_config(self.preset.train, epochs=epochs, max_steps=max_steps, max_time=max_time)
        self.preset = self.preset.replace(train=dataclasses.replace(tcfg, **overrides, seed=self.seed))
        if target_fpr is not None:
            self.preset = self.preset.replace(target_fpr=target_fpr)
        tcfg = self.preset.train

        data = self.read(images, progress=progress)
        if len(data) == 0:
            raise NoReadableImagesError(
                "no readable training images" + (f"; first error: {data.errors[0][1]}" if data.errors else "")
            )
        train_idx, val_idx = split_train_val(data.names, tcfg.val_fraction, self.seed)
        check_calibration_size(len(val_idx), len(data), self.preset.target_fpr, tcfg.val_fraction)
        train, val = data.images[train_idx], data.images[val_idx]
        speed = {"amp": amp, "channels_last": channels_last, "compile": compile}
        trainer = Trainer.start_or_resume(self.preset.model, tcfg, self.device, checkpoint_dir, resume, budget, **speed)
        if is_main_process():  # before training: what it will be, and one line if the folder is small
            if (few := small_folder_warning(len(data))) is not None:
                LOGGER.warning(few)
            LOGGER.info("fit: %s", plan_line(trainer.cfg, len(train), len(val), trainer.world_size))
        self.trainer = trainer
        self._engine = None
        t0 = time.monotonic()
        state = trainer.fit(train, checkpoint_dir=checkpoint_dir, progress=progress, callback=callback)
        self.discriminator = trainer.detector_discriminator
        counts = {"n_train_images": len(train), "n_val_images": len(val), "n_unreadable": len(data.errors)}
        self.training_info = state.summary(tcfg, time.monotonic() - t0, **counts)
        self.provenance = {"created": utc_now(), "training_data": fingerprint_inputs(images)}
        if self.score_spec.needs_statistics and is_main_process():
            self.fit_statistics(train, val)
        if len(val) and is_main_process():
            self.calibrate(val, target_fpr=self.preset.target_fpr)
        return self

    def fit_statistics(self, train: np.ndarray, val: np.ndarray) -> Detector:
        """Fit the per-image statistics model on ``train`` and the fusion scales on ``val`` (both ID, preprocessed).

        The features come from the detector's own scoring engine and precision, as its later scores will.
        """
        engine = self.scoring_engine()
        _, f_train = engine.score_with_statistics(train, self.batch_size)
        sm = StatsModel.fit(f_train)
        if len(val):
            d_val, f_val = engine.score_with_statistics(val, self.batch_size)
            sm.set_fusion(d_val, sm.mahalanobis(f_val))
        self.stats_model = sm
        return self

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
        normalisation group as :meth:`score`, and their mean is D's score exactly. They explain D's share only:
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
        return explanations(stack, corners, p, contributions, scores_from_logits(logits), mode, sm, s)

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
        return score_array(D, stack, self.n_patches, self.seed, self.device, self.batch_size, pool_images)

    def scoring_engine(self) -> ScoringEngine:
        """The engine behind :meth:`score` (``self.engine``), built once per discriminator object.

        An ONNX engine is a snapshot of D's weights; it is rebuilt when ``discriminator`` is replaced or its
        parameters are modified in place (tracked through their version counters).
        """
        D = self.require_model()
        eng = self._engine
        key = (id(D), self.n_patches, tuple(p._version for p in D.parameters()))
        if eng is None or getattr(eng, "source_key", None) != key:
            eng = make_engine(self.engine, D, self.n_patches, self.seed, self.device, precision=self.precision)
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

    def calibrate(self, images: Images, target_fpr: float | None = None) -> Detector:
        """Set the threshold and p-value reference from ID images only. Returns ``self``."""
        fpr = self.preset.target_fpr if target_fpr is None else target_fpr
        scores = self.score(images)
        check_calibration_size(len(scores), len(scores), fpr, None)
        self.preset = self.preset.replace(target_fpr=fpr)
        self.calibration = Calibration.from_scores(scores, fpr)
        return self

    def predict(self, images: Images | ImageSet) -> Prediction:
        """Scores, conformal p-values and decisions at the calibrated false-positive rate, one entry per input.

        ``images`` is a folder or file path, a uint8 stack, or a list of paths, arrays, bytes or Pillow images in
        any mix. Each entry keeps its input's name in ``sources`` (the file path; ``#i`` for the i-th in-memory
        input). An input that cannot be read becomes an error entry (NaN score, the reason in ``errors``) instead
        of failing the call; the others are scored exactly as :meth:`score` scores them (scores are per image).
        The result is a :class:`~discopatch.results.Prediction`, which still reads like the dict this method used
        to return (``out["scores"]``) and adds ``to_frame()``.
        """
        cal = self.calibration
        if cal is None:
            raise NotFittedError("the detector is not calibrated; call calibrate() with ID images")
        return Prediction.from_results(
            self.score_items(images),
            threshold=cal.threshold,
            model_id=self.detector_id,
            meta=self.meta(),
            with_d_scores=self.score_spec.needs_statistics,
        )

    def meta(self) -> dict[str, Any]:
        """What describes this detector in an output: it goes into ``evaluate``'s JSON and the service's answers.

        ``threshold`` is ``None`` when uncalibrated or infinite; ``model_id`` is :attr:`detector_id`.
        """
        return {
            "name": "DisCoPatch",
            "version": __version__,
            "preset": self.preset.name,
            "score_mode": self.preset.score_mode,
            "n_patches": self.n_patches,
            "target_fpr": self.preset.target_fpr,
            "n_calibration": None if self.calibration is None else self.calibration.n,
            "threshold": finite_or_none(self.threshold),
            "model_id": self.detector_id,
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the detector directory (:mod:`discopatch.artifact.files`); sets :attr:`detector_id`.

        A detector built without :meth:`fit` and never saved before gets ``created`` now; one loaded from an
        artefact older than provenance keeps having none rather than a made-up time.
        """
        D = self.require_model()
        if "created" not in self.provenance and self.detector_id is None:
            self.provenance["created"] = utc_now()
        out = save_artifact(
            path,
            D,
            self.preset.preprocess,
            self.n_patches,
            self.seed,
            self.calibration,
            extra={"preset": self.preset.name, "training": self.training_info, **self.provenance}
            | ({} if self.run_config is None else {"run_config": self.run_config}),
            score_mode=self.preset.score_mode,
            stats=None if self.stats_model is None else self.stats_model.to_tensors(),
        )
        self.detector_id = detector_id(out)
        return out

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "auto",
        batch_size: int = 256,
        engine: EngineName = "auto",
        precision: Precision = "fp32",
        allow_legacy: bool = False,
    ) -> Detector:
        """Rebuild a detector from :meth:`save` output; damaged or mismatched artefacts raise ``ArtifactError``, and so
        does one without a configuration digest unless ``allow_legacy`` (a trusted detector saved before digests)."""
        art = load_artifact(path, allow_legacy=allow_legacy)
        det = cls(art.preset(), device=device, seed=art.seed, batch_size=batch_size, engine=engine, precision=precision)
        D = Discriminator(art.model)
        D.load_state_dict(art.state_dict, strict=True)
        D.eval()
        det.discriminator = D.to(det.device)
        det.calibration = art.calibration
        det.training_info = art.meta.get("training", {})
        det.run_config = art.meta.get("run_config")
        det.provenance = {k: art.meta[k] for k in PROVENANCE_KEYS if k in art.meta}
        det.detector_id = detector_id(path)
        if art.stats is not None:
            try:
                det.stats_model = StatsModel.from_tensors(art.stats, 2 * sum(art.model.widths))
            except ValueError as e:
                raise ArtifactError(f"{path}: {e}") from None
        return det
