"""Configuration dataclasses (the named presets built from them: :mod:`discopatch.presets`).

Everything that changes what a detector computes lives here, so that a saved detector can record it in JSON and
a loaded one can be rebuilt exactly. Three groups:

* :class:`ModelConfig` - discriminator and VAE shapes and the normalisation kind (the heart of the method);
* :class:`PreprocessConfig` - how any input image becomes a fixed-size uint8 array (identical for ID and OOD);
* :class:`TrainConfig` - the adversarial training schedule and loss weights.

Presets (:mod:`discopatch.presets`) are plain functions returning a :class:`Preset`; any field can be overridden
(dataclasses.replace, CLI).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from .errors import ConfigError
from .score_modes import ScoreMode, patches_kept

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T", bound="DataclassInstance")

# Every closed set of choices is one Literal type plus the tuple of its values (the tuple is what validation,
# argparse ``choices=`` and the artefact schema use; the Literal is what annotations use). Score modes are the
# exception: an open registry (:mod:`discopatch.score_modes`), so ``ScoreMode`` is a name checked against it.

NormKind = Literal["patch", "batchnorm", "groupnorm", "instancenorm", "none"]
NORM_KINDS: tuple[NormKind, ...] = get_args(NormKind)
#: Norms whose statistics pool one image's patches (at inference): on a 1x1 last map they erase the image.
IMAGE_POOLED_NORMS: tuple[NormKind, ...] = ("patch", "batchnorm")
#: Named ablations that lift a guard; recorded in the artefact so a detector built on one is never mistaken for
#: a recommended configuration.
Ablation = Literal["1x1-last-map"]
ABLATIONS: tuple[Ablation, ...] = get_args(Ablation)
#: How a non-square image becomes the model's square (see :class:`PreprocessConfig`).
ResizeMode = Literal["resize_crop", "pad", "squash"]
RESIZE_MODES: tuple[ResizeMode, ...] = get_args(ResizeMode)
#: Training normalisation groups: the whole single-domain batch (the paper) or one image's patches.
TrainGrouping = Literal["domain", "image"]
TRAIN_GROUPINGS: tuple[TrainGrouping, ...] = get_args(TrainGrouping)
#: Views of D's training patches (:mod:`discopatch.training.levers`): none, or flips / 90-degree rotations per image.
TrainAugment = Literal["none", "geometric"]
TRAIN_AUGMENTS: tuple[TrainAugment, ...] = get_args(TrainAugment)
#: How long one training "epoch" is. ``full``: every image about once. ``official-truncated``: the official code's
#: BatchNorm commits (b2fcf79d, 5f48d551, 5793992b) break an ImageNet epoch once the patch counter passes
#: 20 % of (loader length x patches per image), i.e. about 58 steps of 67 images (docs/METHOD.md).
EpochRule = Literal["full", "official-truncated"]
EPOCH_RULES: tuple[EpochRule, ...] = get_args(EpochRule)
#: What runs D; ``auto`` is resolved to one of the others by :func:`discopatch.inference.engine.resolve_engine_name`.
EngineName = Literal["auto", "torch", "onnx"]
ENGINES: tuple[EngineName, ...] = get_args(EngineName)
#: The number format of D's forward pass (not to be confused with an inverse covariance, which the statistics
#: model calls ``inv_cov``): bf16 exists in the torch engine only, int8 (dynamic quantisation) in the ONNX one.
Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
TORCH_PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")
ONNX_PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")
#: The largest seed: the patch positions fold the seed into 8 signed bytes (:func:`discopatch.patches.image_seed`), and
#: torch and numpy generators take non-negative seeds of at most 64 bits; the artefact schema and ``--seed`` enforce it.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ModelConfig:
    """Shapes of D and the VAE. D's widths are the VAE's, as in the paper, unless ``d_widths`` (one per layer of
    ``widths``) sets D's own: a measured lever, not a default (docs/BENCHMARKS.md, "Levers, third round")."""

    channels: int = 3
    patch_size: int = 64
    widths: tuple[int, ...] = (128, 256, 512, 1024)
    latent_dim: int = 1024
    norm: NormKind = "patch"
    norm_first_layer: bool = True
    eps: float = 1e-5
    negative_slope: float = 0.01
    groupnorm_groups: int = 32
    ablation: Ablation | None = None  # one of ABLATIONS: a configuration kept for comparison, guarded otherwise
    d_widths: tuple[int, ...] | None = None  # D's own conv widths; None: the VAE's ``widths``

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.norm not in NORM_KINDS:
            raise ConfigError(f"norm must be one of {NORM_KINDS}, got {self.norm!r}")
        if self.ablation is not None and self.ablation not in ABLATIONS:
            raise ConfigError(f"ablation must be one of {ABLATIONS} or None, got {self.ablation!r}")
        if not self.widths:
            raise ConfigError("widths must name at least one layer")
        if self.d_widths is not None:
            object.__setattr__(self, "d_widths", tuple(int(w) for w in self.d_widths))
            if len(self.d_widths) != len(self.widths) or min(self.d_widths) < 1:
                raise ConfigError(
                    f"d_widths {list(self.d_widths)} must give {len(self.widths)} positive widths, one per layer of "
                    f"widths {list(self.widths)} (D and the VAE halve the patch the same number of times)"
                )
        down = 2 ** len(self.widths)
        if self.patch_size % down:
            raise ConfigError(
                f"patch_size {self.patch_size} must be divisible by 2**len(widths) = {down} "
                "(every layer halves the patch)"
            )
        if self.erases_image and self.ablation != "1x1-last-map":
            raise ConfigError(
                f"patch_size {self.patch_size} with {len(self.widths)} stride-2 layers leaves D a 1x1 last map, and "
                f"the {self.norm!r} normalisation over one image's patches then sets every channel's image mean to "
                "the learned shift: the image score can only move through the spread of its patches (at 1 patch "
                "per image every image scores the same). Use a larger patch or fewer layers (the paper ends at 4x4: "
                "64 px patches, 4 layers), or request this as the named ablation ablation='1x1-last-map' "
                "(CLI --ablation 1x1-last-map)"
            )

    @property
    def erases_image(self) -> bool:
        """True when D's last map is 1x1 and normalised over the image's patches (see the guard above)."""
        return self.final_spatial == 1 and self.norm in IMAGE_POOLED_NORMS

    @property
    def disc_widths(self) -> tuple[int, ...]:
        """The widths of D's conv blocks: ``d_widths`` when set, else the VAE's ``widths``."""
        return self.widths if self.d_widths is None else self.d_widths

    @property
    def stats_dim(self) -> int:
        """Length of one image's statistics feature: a mean and a log-variance per channel of each of D's layers."""
        return 2 * sum(self.disc_widths)

    @property
    def final_spatial(self) -> int:
        return self.patch_size // (1 << len(self.widths))


@dataclass(frozen=True)
class PreprocessConfig:
    """How a decoded image becomes the model's ``image_size`` square, with ``channels`` channels.

    ``resize_crop`` scales the short side to ``image_size`` (Lanczos) and centre-crops: the paper's ImageNet repack.
    ``pad`` centres smaller images on a black canvas (Fashion-MNIST 28 -> 32) and falls back to ``resize_crop``
    for larger ones. ``squash`` resizes to a square ignoring aspect (the official code's OOD pipeline).
    RGBA and palette-with-transparency images are composited on black; gray images are replicated to RGB and
    RGB images averaged to gray with ITU-R 601 weights (Pillow's ``L`` conversion).
    """

    image_size: int = 256
    channels: int = 3
    resize: ResizeMode = "resize_crop"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be resize_crop, pad or squash, got {self.resize!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.image_size < 4:
            raise ConfigError(f"image_size must be at least 4, got {self.image_size}")


@dataclass(frozen=True)
class TrainConfig:
    """The adversarial schedule. Defaults are the paper's (lr 8.5e-5, w_KL 1e-4, w_adv 1e-3, Adam 0.9/0.999).

    Training ends at ``max_steps`` steps or after ``epochs`` epochs, whichever comes first (``None``: no such
    limit; at least one of them or ``max_time`` must be set), or at ``max_time`` seconds (a limit, off unless set).
    How user options combine with a preset's: :func:`discopatch.budget.effective_train_config`."""

    epochs: int | None = 80
    steps_per_epoch: int | None = None
    epoch_rule: EpochRule = "full"
    max_time: float | None = None
    max_steps: int | None = None  # stop after this many steps in all (a budget that does not depend on the machine)
    batch_images: int = 67
    train_patches: int = 48
    lr: float = 8.5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    w_kl: float = 1e-4
    w_adv: float = 1e-3
    grouping: TrainGrouping = "domain"
    ema: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    # optional levers of the adversarial game (discopatch.training.levers); the defaults train as the paper does
    lr_d: float | None = None  # D's learning rate (None: ``lr``, as the paper)
    d_steps: int = 1  # D updates per VAE update
    lecam: float = 0.0  # weight of the LeCam regulariser of D's logits (0 = off)
    augment: TrainAugment = "none"  # geometric views of every patch D trains on
    lr_decay: int | None = None  # step by which both learning rates have fallen (cosine) to a tenth (None: constant)
    d_prior_weight: float = 0.5  # weight of the prior-sample term in D's loss (the paper's 0.5; 0: D never sees them)
    d_recon_weight: float = 0.5  # weight of the reconstruction term in D's loss (the paper's 0.5)

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.epoch_rule not in EPOCH_RULES:
            raise ConfigError(f"epoch_rule must be one of {EPOCH_RULES}, got {self.epoch_rule!r}")
        if self.grouping not in TRAIN_GROUPINGS:
            raise ConfigError(f"grouping must be 'domain' or 'image', got {self.grouping!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1) (0 = off), got {self.ema}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be positive, got {self.max_steps}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if self.max_time is not None and not self.max_time > 0:
            raise ConfigError(f"max_time must be positive, got {self.max_time}")
        if self.epochs is None and self.max_steps is None and self.max_time is None:
            raise ConfigError("training needs a length: max_steps, epochs or max_time")
        if self.batch_images < 1 or self.train_patches < 1:
            raise ConfigError("batch_images and train_patches must be positive")
        if self.lr_d is not None and not self.lr_d > 0:
            raise ConfigError(f"lr_d must be positive, got {self.lr_d}")
        if self.d_steps < 1:
            raise ConfigError(f"d_steps must be positive, got {self.d_steps}")
        if self.lr_decay is not None and self.lr_decay < 1:
            raise ConfigError(f"lr_decay must be a positive step (None: constant rates), got {self.lr_decay}")
        if not self.lecam >= 0:
            raise ConfigError(f"lecam must be >= 0 (0 = off), got {self.lecam}")
        for name in ("d_prior_weight", "d_recon_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1] (the paper: 0.5), got {getattr(self, name)}")
        if self.d_prior_weight + self.d_recon_weight == 0:
            raise ConfigError("D needs negatives: d_prior_weight and d_recon_weight cannot both be 0")
        if self.augment not in TRAIN_AUGMENTS:
            raise ConfigError(f"augment must be one of {TRAIN_AUGMENTS}, got {self.augment!r}")


@dataclass(frozen=True)
class Preset:
    """A complete recipe: model, preprocessing, training and the number of patches scored per image."""

    name: str
    model: ModelConfig
    preprocess: PreprocessConfig
    train: TrainConfig
    test_patches: int = 64
    target_fpr: float = 0.05
    notes: str = ""
    score_mode: ScoreMode = "d-only"  # a registered mode (discopatch.score_modes): d-only, fused, stats-only
    #: Which of an image's patches D's score averages: ``mean`` (all, the paper's) or the least real share
    #: (``top50``, ``top25``, ``top12``, ``max``; :data:`discopatch.score_modes.PATCH_AGGREGATES`).
    patch_aggregate: str = "mean"

    def __post_init__(self) -> None:
        """The invariants between the parts, checked wherever a preset is made (a named one, ``replace``, the CLI's
        overrides, a loaded artefact), so no configuration that cannot score reaches training."""
        pre, model = self.preprocess, self.model
        if pre.image_size < model.patch_size:
            raise ConfigError(f"image size {pre.image_size} is smaller than patch size {model.patch_size}")
        if pre.channels != model.channels:
            raise ConfigError(f"preprocessing gives {pre.channels} channel(s) but the model takes {model.channels}")
        if self.test_patches < 1:
            raise ConfigError(f"test_patches must be positive, got {self.test_patches}")
        patches_kept(self.patch_aggregate, self.test_patches)  # an unknown aggregate fails here

    def replace(self, **kwargs: Any) -> Preset:
        return dataclasses.replace(self, **kwargs)


def to_dict(obj: DataclassInstance) -> dict[str, Any]:
    """Dataclass -> JSON-ready dict (tuples become lists)."""
    return {k: json_ready(v) for k, v in dataclasses.asdict(obj).items()}


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
    """Build ``cls`` from a dict, rejecting unknown keys so a corrupted artefact cannot pass silently."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**data)


__all__ = [
    "ABLATIONS",
    "EPOCH_RULES",
    "IMAGE_POOLED_NORMS",
    "NORM_KINDS",
    "RESIZE_MODES",
    "TRAIN_GROUPINGS",
    "Ablation",
    "EpochRule",
    "ModelConfig",
    "NormKind",
    "PreprocessConfig",
    "Preset",
    "ResizeMode",
    "ScoreMode",
    "TrainConfig",
    "TrainGrouping",
    "from_dict",
    "to_dict",
]
