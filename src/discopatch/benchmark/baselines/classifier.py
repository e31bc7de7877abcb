"""Label-based baselines: a small ResNet classifier and its post-hoc scores (MSP, Energy, Mahalanobis, KNN)."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import pinvh
from torch import nn

from ...patches import extract_patches, to_tensor
from ...runtime import derive_seed
from .base import Baseline, _channels, _check_stack, _chunks, _eval_mode, _seeded

#: The post-hoc scores :class:`ClassifierScores` can read out of one trained classifier.
CLASSIFIER_SCORES = ("msp", "energy", "mahalanobis", "knn")


class _BasicBlock(nn.Module):
    """Two 3x3 convs with BN and a (projected when the shape changes) identity shortcut (He et al., CVPR 2016)."""

    def __init__(self, a: int, b: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(a, b, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(b)
        self.conv2 = nn.Conv2d(b, b, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(b)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or a != b:
            self.shortcut = nn.Sequential(nn.Conv2d(a, b, 1, stride=stride, bias=False), nn.BatchNorm2d(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class _SmallResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, three stages (stride 1, 2, 2), global average pool, linear head."""

    def __init__(self, channels: int, n_classes: int, width: int, blocks: int) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        prev = width
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(_BasicBlock(prev, w, 2 if (i > 0 and j == 0) else 1))
                prev = w
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(prev, n_classes)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.stages(self.stem(x))
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.penultimate(x))
        return out


class SmallCNNClassifier:
    """A small ResNet (default 16/32/64 channels, one block per stage: "ResNet-8") trained on ID images + labels.

    Trained once with Adam and cross-entropy, seeded, with an optional time budget; the augmentation (on by
    default) is a random crop after 4-pixel black padding plus a random horizontal flip. The post-hoc detectors
    are :class:`ClassifierScores` objects sharing this network; :meth:`scorers` makes all four.
    """

    def __init__(
        self,
        n_classes: int | None = None,
        width: int = 16,
        blocks: int = 1,
        epochs: int = 30,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        augment: bool = True,
        max_steps: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.n_classes = n_classes
        self.width = int(width)
        self.blocks = int(blocks)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.augment = bool(augment)
        self.max_steps = max_steps
        self.device = torch.device(device)
        self.net: _SmallResNet | None = None
        self.fit_seconds = 0.0
        self.steps_ = 0
        self.losses_: list[float] = []

    @property
    def is_fitted(self) -> bool:
        return self.net is not None

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        pad = 4
        xp = F.pad(x, (pad, pad, pad, pad), value=-1.0)  # -1 is black in the [-1, 1] range
        corners = torch.randint(0, 2 * pad + 1, (b, 1, 2), generator=gen)
        if h != w:
            raise ValueError("augmentation expects square images")
        crops = extract_patches(xp, corners.to(x.device), h)
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device).view(b, 1, 1, 1)
        return torch.where(flip, crops.flip(-1), crops)

    def fit(
        self, images: np.ndarray, labels: np.ndarray, *, max_time: float | None = None, seed: int = 0
    ) -> SmallCNNClassifier:
        """Train until ``epochs``, ``max_steps`` or ``max_time`` seconds run out; returns ``self``."""
        images = _check_stack(images)
        if labels is None:
            raise ValueError("SmallCNNClassifier needs the ID class labels")
        y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(y_all) != len(images):
            raise ValueError("images and labels differ in length")
        t0 = time.monotonic()
        if self.n_classes is None:
            self.n_classes = int(y_all.max()) + 1
        with _seeded(derive_seed(seed, "classifier", "init")):
            self.net = _SmallResNet(_channels(images), self.n_classes, self.width, self.blocks)
        net = self.net.to(self.device).train()
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(derive_seed(seed, "classifier", "augment"))
        self.steps_, self.losses_ = 0, []
        n, done = len(images), False
        for epoch in range(self.epochs):
            order = np.random.default_rng(derive_seed(seed, "classifier", "epoch", epoch)).permutation(n)
            total, count = 0.0, 0
            for sl in _chunks(n, self.batch_size):
                idx = order[sl]
                if len(idx) < 2 and count:  # BN cannot use a 1-image tail batch well; skip it
                    continue
                x = to_tensor(images[idx]).to(self.device)
                if self.augment:
                    x = self._augment(x, gen)
                loss = F.cross_entropy(net(x), y_all[idx].to(self.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self.steps_ += 1
                total, count = total + loss.item() * len(idx), count + len(idx)
                over_time = max_time is not None and time.monotonic() - t0 >= max_time
                if over_time or (self.max_steps is not None and self.steps_ >= self.max_steps):
                    done = True
                    break
            self.losses_.append(total / max(count, 1))
            if done:
                break
        net.eval()
        self.fit_seconds = time.monotonic() - t0
        return self

    @torch.no_grad()
    def logits_and_features(self, images: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``(N, K)`` and penultimate features ``(N, 4 * width)``, float64, eval mode (running BN stats)."""
        images = _check_stack(images)
        if self.net is None:
            raise RuntimeError("SmallCNNClassifier is not fitted")
        logits, feats = [], []
        with _eval_mode(self.net):
            for sl in _chunks(len(images), batch_size):
                f = self.net.penultimate(to_tensor(images[sl]).to(self.device))
                feats.append(f.double().cpu())
                logits.append(self.net.head(f).double().cpu())
        k = self.n_classes or 0
        if not logits:
            return np.zeros((0, k)), np.zeros((0, 4 * self.width))
        return torch.cat(logits).numpy(), torch.cat(feats).numpy()

    def scorers(
        self, kinds: tuple[str, ...] = CLASSIFIER_SCORES, *, temperature: float = 1.0, k: int = 50
    ) -> list[ClassifierScores]:
        """One :class:`ClassifierScores` per kind, all sharing this classifier."""
        return [ClassifierScores(self, kind, temperature=temperature, k=k) for kind in kinds]


class ClassifierScores(Baseline):
    """A post-hoc OOD score of a (shared) :class:`SmallCNNClassifier`; ``kind`` picks which:

    * ``msp`` - 1 - max softmax probability (Hendrycks & Gimpel, ICLR 2017);
    * ``energy`` - the free energy ``-T logsumexp(logits / T)`` (Liu et al., NeurIPS 2020); ID has low energy;
    * ``mahalanobis`` - min over classes of the squared Mahalanobis distance of the penultimate features to the class
      means under one tied covariance (Lee et al., NeurIPS 2018; penultimate layer only, no input preprocessing
      or layer ensemble);
    * ``knn`` - distance from the L2-normalised penultimate feature to its ``k``-th nearest L2-normalised training
      feature (Sun et al., ICML 2022; k = 50 as in their CIFAR-10 setting).

    ``fit`` trains the classifier only if it is not trained yet (train it once yourself to control its budget),
    then fits the class statistics / feature bank on the given ID training images and labels.
    """

    uses_labels = True

    def __init__(self, classifier: SmallCNNClassifier, kind: str, *, temperature: float = 1.0, k: int = 50) -> None:
        if kind not in CLASSIFIER_SCORES:
            raise ValueError(f"kind must be one of {CLASSIFIER_SCORES}, got {kind!r}")
        self.classifier = classifier
        self.kind = kind
        self.name = f"cnn_{kind}"
        self.temperature = float(temperature)
        self.k = int(k)
        self.class_means_: np.ndarray | None = None
        self.inv_cov_: np.ndarray | None = None
        self.bank_: np.ndarray | None = None

    def fit(
        self, images: np.ndarray, labels: np.ndarray | None = None, *, max_time: float | None = None, seed: int = 0
    ) -> ClassifierScores:
        t0 = time.monotonic()
        if labels is None:
            raise ValueError(f"{self.name} needs the ID class labels")
        if not self.classifier.is_fitted:
            self.classifier.fit(images, labels, max_time=max_time, seed=seed)
        if self.kind in ("mahalanobis", "knn"):
            _, feats = self.classifier.logits_and_features(images)
            if self.kind == "mahalanobis":
                self.class_means_, self.inv_cov_ = fit_tied_gaussians(feats, np.asarray(labels))
            else:
                self.bank_ = l2_normalise(feats)
        self.fit_seconds = time.monotonic() - t0
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        logits, feats = self.classifier.logits_and_features(images)
        if self.kind == "msp":
            return msp_score(logits)
        if self.kind == "energy":
            return energy_score(logits, self.temperature)
        if self.kind == "mahalanobis":
            if self.inv_cov_ is None or self.class_means_ is None:
                raise RuntimeError(f"{self.name} is not fitted")
            return mahalanobis_score(feats, self.class_means_, self.inv_cov_)
        if self.bank_ is None:
            raise RuntimeError(f"{self.name} is not fitted")
        return knn_score(feats, self.bank_, self.k)


def msp_score(logits: np.ndarray) -> np.ndarray:
    """``1 - max softmax`` per row (Hendrycks & Gimpel, ICLR 2017): 0 for a certain prediction, high = OOD."""
    return 1.0 - torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).max(1).values.numpy()


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Free energy ``-T logsumexp(logits / T)`` (Liu et al., NeurIPS 2020): ID inputs get low energy, high = OOD."""
    t = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return (-temperature * torch.logsumexp(t, dim=1)).numpy()


def fit_tied_gaussians(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means ``(K, d)`` and the (pseudo-)inverse of the shared within-class covariance (Lee et al. 2018)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(0) for c in classes])
    centred = f - means[np.searchsorted(classes, y)]
    return means, pinvh(centred.T @ centred / len(f))


def mahalanobis_score(features: np.ndarray, means: np.ndarray, inv_cov: np.ndarray) -> np.ndarray:
    """Minimum over classes of the squared Mahalanobis distance to the class mean (Lee et al., NeurIPS 2018)."""
    d = np.asarray(features, dtype=np.float64)[:, None, :] - means[None]  # (N, K, d)
    distances: np.ndarray = np.einsum("nkd,de,nke->nk", d, inv_cov, d).min(1)
    return distances


def l2_normalise(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    unit: np.ndarray = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return unit


def knn_score(features: np.ndarray, bank: np.ndarray, k: int = 50, chunk: int = 1024) -> np.ndarray:
    """Distance from each L2-normalised feature to its k-th nearest row of the (normalised) ``bank``
    (Sun et al., ICML 2022), via ``||a - b||^2 = 2 - 2 a.b`` for unit vectors; ``k`` is capped at the bank size.
    """
    q = l2_normalise(features)
    k = max(1, min(int(k), len(bank)))
    out = np.empty(len(q), np.float64)
    for sl in _chunks(len(q), chunk):
        sim = q[sl] @ bank.T
        kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1]
        out[sl] = np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0))
    return out
