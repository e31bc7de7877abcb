"""The user-facing detector: fit on ID images, calibrate, score, predict, save, load.

State machine (as in alibi-detect): ``fit`` trains D and the VAE on the training split and calibrates on the
held-out validation split; ``calibrate`` can be called again on any other ID images; ``score`` returns one float
per image (higher = more OOD); ``predict`` adds conformal p-values and the decision at the calibrated
false-positive rate.

Per-image outputs all come from one method, :meth:`Detector.score_decoded` (decoded images and decoding errors ->
one :class:`~discopatch.results.ImageResult` each); :meth:`Detector.score_items` decodes inputs in chunks for it,
and ``predict``, ``discopatch score``, ``evaluate``, the service and the folder watcher are built on these two.
They and the rest of scoring live in :class:`~discopatch.detector_scoring.ScoringDetector`, the scoring half of
:class:`Detector`; this module holds what makes a detector: construction, ``fit``, calibration, ``save``/``load``.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._version import __version__
from .artifact.files import PROVENANCE_KEYS, ArtifactError, detector_id, load_artifact, save_artifact, utc_now
from .budget import check_calibration_size, effective_train_config, fit_warnings, plan_line
from .calibration import Calibration
from .config import PRECISIONS, TORCH_PRECISIONS, EngineName, Precision, Preset
from .data.sources import Images, ImageSet, fingerprint_inputs, read_images, split_train_val
from .detector_scoring import ScoringDetector
from .errors import ConfigError, NoReadableImagesError, NotFittedError
from .inference.engine import ScoringEngine, resolve_engine_name
from .inference.stats_model import StatsModel
from .log import LOGGER
from .model import Discriminator
from .presets import get_preset
from .results import Prediction, finite_or_none
from .runtime import resolve_device
from .score_modes import get as get_score_mode
from .training.checkpoint import TrainState
from .training.distributed import is_main_process
from .training.trainer import Trainer


class Detector(ScoringDetector):
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
            raise ConfigError(f"precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got {precision!r}")
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
        self._apply_fit_options(budget, overrides, target_fpr)
        tcfg = self.preset.train
        data = self.read(images, progress=progress)
        train, val = self._training_split(data)
        speed = {"amp": amp, "channels_last": channels_last, "compile": compile}
        trainer = Trainer.start_or_resume(self.preset.model, tcfg, self.device, checkpoint_dir, resume, budget, **speed)
        if is_main_process():  # before training: what it will be, and a line for a small folder or a long run
            for warning in fit_warnings(self.preset.name, trainer.cfg, len(data), len(train), trainer.world_size):
                LOGGER.warning(warning)
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

    def _apply_fit_options(self, budget: dict[str, Any], overrides: dict[str, Any], target_fpr: float | None) -> None:
        """Fold ``fit``'s options into the preset, so the saved detector records the training that ran: the budget
        through the one rule ``discopatch fit`` uses (:func:`~discopatch.budget.effective_train_config`), then the
        :class:`~discopatch.config.TrainConfig` overrides, the detector's seed and the target false-positive rate."""
        tcfg = effective_train_config(self.preset.train, **budget)
        self.preset = self.preset.replace(train=dataclasses.replace(tcfg, **overrides, seed=self.seed))
        if target_fpr is not None:
            self.preset = self.preset.replace(target_fpr=target_fpr)

    def _training_split(self, data: ImageSet) -> tuple[np.ndarray, np.ndarray]:
        """The readable images split into training and held-out calibration images (hash-ranked, seeded).

        Refuses before any training when nothing is readable or the held-out split is too small for a finite
        threshold at the target false-positive rate."""
        if len(data) == 0:
            raise NoReadableImagesError(
                "no readable training images" + (f"; first error: {data.errors[0][1]}" if data.errors else "")
            )
        tcfg = self.preset.train
        train_idx, val_idx = split_train_val(data.names, tcfg.val_fraction, self.seed)
        check_calibration_size(len(val_idx), len(data), self.preset.target_fpr, tcfg.val_fraction)
        return data.images[train_idx], data.images[val_idx]

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

    # ------------------------------------------------------------------ scoring
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
            patch_aggregate=self.preset.patch_aggregate,
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
                det.stats_model = StatsModel.from_tensors(art.stats, art.model.stats_dim)
            except ValueError as e:
                raise ArtifactError(f"{path}: {e}") from None
        return det
