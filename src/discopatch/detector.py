"""The user-facing detector: fit on ID images, calibrate, score, predict, save, load.

State machine (as in alibi-detect): ``fit`` trains D and the VAE on the training split and calibrates on the
held-out validation split; ``calibrate`` can be called again on any other ID images; ``score`` returns one float
per image (higher = more OOD); ``predict`` adds conformal p-values and the decision at the calibrated
false-positive rate.

Example::

    det = Detector(preset="small").fit("train_images/", max_time=600)
    out = det.predict(["a.png", "b.jpg"])
    det.save("model/")
    det = Detector.load("model/")
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._version import __version__
from .artifact import PROVENANCE_KEYS, ArtifactError, detector_id, load_artifact, save_artifact
from .calibration import Calibration
from .config import PRESETS, Preset, get_preset, to_dict
from .data.images import ImageInput, expand_paths, preprocess, preprocess_many
from .data.sources import ImageSet, fingerprint_inputs, load_folder, load_images, split_train_val
from .distributed import is_main_process
from .engine import PRECISIONS, TORCH_PRECISIONS, EngineName, Precision, ScoringEngine, make_engine, resolve_engine_name
from .errors import NotFittedError
from .explain import Explanation
from .model import Discriminator
from .patches import content_corners
from .results import Prediction
from .runtime import resolve_device
from .scoring import score_array, scores_from_logits
from .stats_model import StatsModel
from .training import Trainer, TrainState

Images = str | os.PathLike | np.ndarray | Sequence[ImageInput]


def utc_now() -> str:
    """The current time as UTC ISO-8601 to the second, e.g. ``2026-12-01T09:30:00Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Detector:
    """DisCoPatch detector. Construct from a preset name or a :class:`~discopatch.config.Preset`.

    ``engine`` picks what runs D when scoring: ``torch``, ``onnx`` (ONNX Runtime, CPU, needs the ``[onnx]``
    extra) or ``auto`` (:data:`discopatch.engine.DEFAULT_CPU_ENGINE` on CPU, torch on CUDA). Their scores agree
    within 1e-4 (:mod:`discopatch.engine`). ``precision="bf16"`` (torch engine: a bfloat16 copy of D's
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
        #: Hash of the saved files (:func:`~discopatch.artifact.detector_id`); ``None`` until saved or loaded.
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
    def model_config(self):
        return self.preset.model

    @property
    def preprocess_config(self):
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
        cfg = self.preset.preprocess
        if isinstance(images, (str, os.PathLike)):
            return load_folder(images, cfg, progress=progress)
        if isinstance(images, np.ndarray):
            if images.ndim not in (3, 4):
                raise ValueError(f"an image stack must be (N, H, W) or (N, H, W, C); got shape {images.shape}")
            images = list(images)
        return load_images(list(images), cfg, progress=progress)

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
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool = True,
        channels_last: bool | None = None,
        compile: bool = False,
        amp: bool | None = None,
        callback: Callable[[TrainState, dict[str, float]], None] | None = None,
        **train_overrides: Any,
    ) -> Detector:
        """Train on ID images, then calibrate on the held-out validation split. Returns ``self``.

        ``train_overrides`` are :class:`~discopatch.config.TrainConfig` fields (``lr``, ``batch_images``, ...).
        ``callback(state, losses)`` runs after every training step (the learning curve snapshots D there).
        ``channels_last`` (default on), ``compile`` and ``amp`` (bf16 autocast; default on for CUDA) only change
        speed. Inside an initialised process group (``torchrun``) training is data-parallel and only rank 0
        calibrates.
        """
        overrides = dict(train_overrides)
        if epochs is not None:
            overrides["epochs"] = epochs
        if max_time is not None:
            overrides["max_time"] = max_time
        if max_steps is not None:
            overrides["max_steps"] = max_steps
        if val_fraction is not None:
            overrides["val_fraction"] = val_fraction
        overrides["seed"] = self.seed
        self.preset = self.preset.replace(train=dataclasses.replace(self.preset.train, **overrides))
        if target_fpr is not None:
            self.preset = self.preset.replace(target_fpr=target_fpr)
        tcfg = self.preset.train

        data = self.read(images, progress=progress)
        if len(data) == 0:
            raise ValueError(
                "no readable training images" + (f"; first error: {data.errors[0][1]}" if data.errors else "")
            )
        train_idx, val_idx = split_train_val(data.names, tcfg.val_fraction, self.seed)
        train, val = data.images[train_idx], data.images[val_idx]

        ckpt_exists = checkpoint_dir is not None and (Path(checkpoint_dir) / "checkpoint.json").exists()
        if resume and ckpt_exists:
            resume_overrides = {k: v for k, v in overrides.items() if k in ("epochs", "max_time", "max_steps")}
            trainer = Trainer.from_checkpoint(
                checkpoint_dir, self.device, resume_overrides, amp=amp, channels_last=channels_last, compile=compile
            )
            if trainer.model_cfg != self.preset.model:
                raise ValueError("the checkpoint was trained with another model configuration than requested")
        else:
            if resume:
                raise FileNotFoundError(f"--resume given but no checkpoint found in {checkpoint_dir}")
            trainer = Trainer(
                self.preset.model, tcfg, self.device, amp=amp, channels_last=channels_last, compile=compile
            )
        self.trainer = trainer
        self._engine = None
        t0 = time.monotonic()
        state = trainer.fit(train, checkpoint_dir=checkpoint_dir, progress=progress, callback=callback)
        self.discriminator = trainer.detector_discriminator
        self.training_info = {
            "steps": state.step,
            "epochs_completed": state.epoch,
            "train_seconds": round(state.elapsed, 2),
            "this_run_seconds": round(time.monotonic() - t0, 2),
            "stop_reason": state.stop_reason,
            "n_train_images": len(train),
            "n_val_images": len(val),
            "n_unreadable": len(data.errors),
            "train_config": to_dict(tcfg),
            "last_losses": state.history[-1] if state.history else {},
        }
        self.provenance = {"created": utc_now(), "training_data": fingerprint_inputs(images)}
        if self.preset.score_mode != "d-only" and is_main_process():
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

    def _score_parts(self, engine: ScoringEngine, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The configured score and, when that is not D's score alone, D's score from the same pass (else None)."""
        mode = self.preset.score_mode
        if mode == "d-only":
            return engine.score(stack, self.batch_size), None
        if self.stats_model is None:
            raise NotFittedError(f"score_mode {mode!r} needs the statistics model; call fit() or fit_statistics()")
        d, f = engine.score_with_statistics(stack, self.batch_size)
        s = self.stats_model.mahalanobis(f)
        return (s if mode == "stats-only" else self.stats_model.fuse(d, s)), d

    def _score_stack(self, stack: np.ndarray) -> np.ndarray:
        return self.score_with_engine(self.scoring_engine(), stack)

    def explain(self, images: Images) -> list[Explanation]:
        """Per image: patch corners, each patch's D contribution and, when fused, which view set the score.

        The contributions (``1 - sigmoid(logit)`` per patch) come from the same forward pass and per-image
        normalisation group as :meth:`score`, and their mean is D's score exactly. They explain D's share only:
        the per-image statistics of a fused score are global and have no position (see :mod:`discopatch.explain`).
        """
        return self._explain_stack(self._stack(images))

    def explain_preprocessed(self, stack: np.ndarray) -> list[Explanation]:
        """:meth:`explain` for images already passed through :func:`~discopatch.data.images.preprocess`; each
        explanation's ``score`` is what :meth:`score_preprocessed` returns for its image (the service scores this
        way, so a score and its heat map come from one forward pass)."""
        return self._explain_stack(stack)

    def _explain_stack(self, stack: np.ndarray) -> list[Explanation]:
        engine = self.scoring_engine()
        mode = self.preset.score_mode
        if mode == "d-only":
            logits, feats = engine.batched_logits(stack, self.batch_size), None
        else:
            if self.stats_model is None:
                raise NotFittedError(f"score_mode {mode!r} needs the statistics model; call fit() or fit_statistics()")
            logits, feats = engine.logits_with_statistics(stack, self.batch_size)
        contributions = 1.0 - torch.sigmoid(logits.double()).numpy()
        d = scores_from_logits(logits)
        corners = content_corners(stack, self.model_config.patch_size, self.n_patches, self.seed)
        s = None if feats is None or self.stats_model is None else self.stats_model.mahalanobis(feats)
        out = []
        for i in range(len(stack)):
            extra: dict[str, Any] = {"score": float(d[i]), "source": "discriminator"}
            if s is not None and self.stats_model is not None:
                dm, ds, sm, ss = self.stats_model.fusion
                d_z, s_z = float((d[i] - dm) / ds), float((s[i] - sm) / ss)
                fused = float(self.stats_model.fuse(d[i : i + 1], s[i : i + 1])[0])
                extra = {
                    "score": float(s[i]) if mode == "stats-only" else fused,
                    "source": "statistics" if mode == "stats-only" or s_z > d_z else "discriminator",
                    "d_z": d_z,
                    "stats_z": s_z,
                    "stats_score": float(s[i]),
                }
            out.append(
                Explanation(
                    image=stack[i],
                    corners=corners[i],
                    patch_size=self.model_config.patch_size,
                    contributions=contributions[i],
                    d_score=float(d[i]),
                    score_mode=mode,
                    **extra,
                )
            )
        return out

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

    def _stack(self, images: Images, progress: bool = False) -> np.ndarray:
        if isinstance(images, (str, os.PathLike)):
            data = load_folder(images, self.preset.preprocess, progress=progress)
            if data.errors:
                raise ValueError(f"{len(data.errors)} unreadable image(s), first: {data.errors[0][1]}")
            return data.images
        if isinstance(images, ImageSet):
            return images.images
        cfg = self.preset.preprocess
        items: Iterable[ImageInput] = list(images) if isinstance(images, np.ndarray) else images
        out = [preprocess(x, cfg) for x in items]
        if not out:
            return np.zeros((0, cfg.image_size, cfg.image_size) + ((3,) if cfg.channels == 3 else ()), np.uint8)
        return np.stack(out)

    def iter_score_files(
        self, paths: Sequence[str | os.PathLike], chunk_size: int | None = None, explain: bool = False
    ) -> Iterable[dict[str, Any]]:
        """Score files in input order, ``chunk_size`` at a time; yields one row per file.

        Rows are ``{"path", "score", "p_value", "is_ood", "error", "threshold", "model_id"}``; the last two say
        which calibrated threshold and which saved detector (:attr:`detector_id`) produced the row. A fused or
        statistics-only detector adds ``"d_score"`` after ``"score"``: D's own score from the same pass. A file that
        cannot be read yields a row with ``score=None`` and a specific ``error``; the others are unaffected (scores
        are per image). :func:`discopatch.results_frame` turns rows into a pandas DataFrame.
        ``explain=True`` adds ``"explanation"`` (an :class:`Explanation`, ``None`` for unreadable files) from the
        same forward pass as the score.
        """
        self.require_model()
        chunk_size = chunk_size or self.batch_size
        cfg = self.preset.preprocess
        with_d = self.preset.score_mode != "d-only"
        for start in range(0, len(paths), chunk_size):
            chunk = paths[start : start + chunk_size]
            decoded = list(preprocess_many(chunk, cfg))
            ok = [img for _, img, _ in decoded if img is not None]
            explanations: list[Explanation] = self._explain_stack(np.stack(ok)) if ok and explain else []
            scores: Any
            if explain:
                scores, d_scores = [e.score for e in explanations], [e.d_score for e in explanations]
            elif ok:
                scores, d_scores = self._score_parts(self.scoring_engine(), np.stack(ok))
            else:
                scores, d_scores = [], None
            it, it_d, it_expl = iter(scores), iter(d_scores if d_scores is not None else []), iter(explanations)
            for (_, img, err), path in zip(decoded, chunk):
                s = None if img is None else float(next(it))
                row: dict[str, Any] = {"path": str(path), "score": s}
                if with_d:
                    row["d_score"] = None if img is None else float(next(it_d))
                row |= {"p_value": None, "is_ood": None, "error": err}
                row |= {"threshold": self._row_threshold(), "model_id": self.detector_id}
                if s is not None and self.calibration is not None:
                    row["p_value"] = float(self.calibration.p_values(np.array([s]))[0])
                    row["is_ood"] = bool(s > self.calibration.threshold)
                if explain:
                    row["explanation"] = None if img is None else next(it_expl)
                yield row

    def _row_threshold(self) -> float | None:
        """The threshold as an output value: ``None`` when uncalibrated or infinite (too few calibration images)."""
        thr = self.threshold
        return None if thr is None or not np.isfinite(thr) else float(thr)

    def calibrate(self, images: Images, target_fpr: float | None = None) -> Detector:
        """Set the threshold and p-value reference from ID images only. Returns ``self``."""
        fpr = self.preset.target_fpr if target_fpr is None else target_fpr
        self.preset = self.preset.replace(target_fpr=fpr)
        self.calibration = Calibration.from_scores(self.score(images), fpr)
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
        sources, decoded = self._decode_named(images)
        n = len(sources)
        scores, p_values, is_ood = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool)
        d_scores = None if self.preset.score_mode == "d-only" else np.full(n, np.nan)
        ok = [i for i, (img, _) in enumerate(decoded) if img is not None]
        if ok:
            s, d = self._score_parts(self.scoring_engine(), np.stack([decoded[i][0] for i in ok]))
            scores[ok], p_values[ok], is_ood[ok] = s, cal.p_values(s), cal.is_ood(s)
            if d_scores is not None and d is not None:
                d_scores[ok] = d
        return Prediction(
            sources=sources,
            scores=scores,
            p_values=p_values,
            is_ood=is_ood,
            errors=[err for _, err in decoded],
            threshold=cal.threshold,
            model_id=self.detector_id,
            meta=self.meta(),
            d_scores=d_scores,
        )

    def _decode_named(self, images: Images | ImageSet) -> tuple[list[str], list[tuple[np.ndarray | None, str | None]]]:
        """Each input's name and ``(preprocessed image, None)`` or ``(None, error)``, in input order.

        A path given alone is expanded like ``discopatch score`` does (a folder to its images, a file kept as given,
        so a missing one is an error entry); inside a list every element is one input.
        """
        if isinstance(images, ImageSet):  # already preprocessed; its failed inputs follow the others
            names = list(images.names) + [name for name, _ in images.errors]
            return names, [(img, None) for img in images.images] + [(None, err) for _, err in images.errors]
        if isinstance(images, (str, os.PathLike)):
            items: list[ImageInput] = list(expand_paths([images]))
        elif isinstance(images, np.ndarray):
            if images.ndim not in (3, 4):
                raise ValueError(f"an image stack must be (N, H, W) or (N, H, W, C); got shape {images.shape}")
            items = list(images)
        else:
            items = list(images)
        names = [str(x) if isinstance(x, (str, os.PathLike)) else f"#{i}" for i, x in enumerate(items)]
        return names, [(img, err) for _, img, err in preprocess_many(items, self.preset.preprocess)]

    def decide(self, scores: np.ndarray) -> dict[str, Any]:
        """p-values and decisions for scores already computed, with the threshold and detector they come from."""
        cal = self.calibration
        if cal is None:
            raise NotFittedError("the detector is not calibrated; call calibrate() with ID images")
        return {
            "scores": scores,
            "p_values": cal.p_values(scores),
            "is_ood": cal.is_ood(scores),
            "threshold": cal.threshold,
            "model_id": self.detector_id,
            "meta": self.meta(),
        }

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
            "threshold": self._row_threshold(),
            "model_id": self.detector_id,
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the detector directory (:mod:`discopatch.artifact`); sets :attr:`detector_id`.

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
        path: str | os.PathLike,
        device: str | torch.device = "auto",
        batch_size: int = 256,
        engine: EngineName = "auto",
        precision: Precision = "fp32",
    ) -> Detector:
        """Rebuild a detector from :meth:`save` output; damaged or mismatched artefacts raise ``ArtifactError``."""
        art = load_artifact(path)
        name = art.meta.get("preset")
        base = get_preset(name if name in PRESETS else "small")
        preset = base.replace(
            name=name if isinstance(name, str) else base.name,  # a custom preset's name survives a re-save
            model=art.model,
            preprocess=art.preprocess,
            test_patches=art.test_patches,
            target_fpr=art.calibration.target_fpr if art.calibration else base.target_fpr,
            score_mode=art.score_mode,
        )
        det = cls(preset, device=device, seed=art.seed, batch_size=batch_size, engine=engine, precision=precision)
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
