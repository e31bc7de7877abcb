"""Per-image baseline OOD detectors that the benchmark runs next to DisCoPatch.

Every baseline consumes the same preprocessed uint8 stacks as DisCoPatch (``(N, S, S)`` or ``(N, S, S, C)``, turned
into [-1, 1] tensors by :func:`discopatch.patches.to_tensor`) and returns float64 scores, higher = more OOD, so one
evaluation path serves all of them. The interface is deliberately small::

    b = DeepSVDD().fit(train_images, max_time=60, seed=0)
    scores = b.score(test_images)

Label-free (``uses_labels=False``):

* :class:`VAEReconstruction`, :class:`VAEElbo` - the adversarial VAE that DisCoPatch trains anyway, on the same
  content-seeded patches D sees;
* :class:`InputComplexityElbo` - the ELBO corrected by PNG complexity (Serrà et al., ICLR 2020);
* :class:`DeepSVDD` - one-class hypersphere (Ruff et al., ICML 2018);
* :class:`NMDStatistics` - per-image channel means of D's conv layers, Gaussian/Mahalanobis (after Dong et al.,
  Neural Mean Discrepancy, arXiv 2104.11408).

Label-based (``uses_labels=True``, report them in their own block): :class:`SmallCNNClassifier` trained once, read
out by four :class:`ClassifierScores` (MSP, Energy, Mahalanobis, KNN).
"""

from __future__ import annotations

import abc
import io
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.linalg import pinvh
from sklearn.covariance import LedoitWolf
from torch import nn

from ..model import VAE, Discriminator
from ..patches import content_corners, extract_patches, to_tensor
from ..runtime import derive_seed

__all__ = [
    "CLASSIFIER_SCORES",
    "Baseline",
    "ClassifierScores",
    "DeepSVDD",
    "InputComplexityElbo",
    "NMDStatistics",
    "SmallCNNClassifier",
    "VAEElbo",
    "VAEReconstruction",
    "elbo_sigma",
    "energy_score",
    "fit_tied_gaussians",
    "knn_score",
    "l2_normalise",
    "mahalanobis_score",
    "msp_score",
    "png_bits",
]

#: The post-hoc scores :class:`ClassifierScores` can read out of one trained classifier.
CLASSIFIER_SCORES = ("msp", "energy", "mahalanobis", "knn")


# ---------------------------------------------------------------------------------------------------------------------
# Interface and helpers
# ---------------------------------------------------------------------------------------------------------------------


class Baseline(abc.ABC):
    """A per-image detector: ``fit`` on ID images (returns ``self``), ``score`` any images (float64, high = OOD).

    ``fit_seconds`` is the wall time of the last ``fit`` (training cost for the report). ``max_time`` caps training
    where there is training; ``seed`` fixes every random choice of ``fit``. A time-capped run stops after a number
    of steps that depends on the machine, so exact reproducibility needs a step/epoch limit instead.
    """

    name: str = "baseline"
    uses_labels: bool = False
    fit_seconds: float = 0.0

    @abc.abstractmethod
    def fit(
        self, images: np.ndarray, labels: np.ndarray | None = None, *, max_time: float | None = None, seed: int = 0
    ) -> Baseline:
        """Fit on ID training images (labels only for ``uses_labels`` baselines); returns ``self``."""

    @abc.abstractmethod
    def score(self, images: np.ndarray) -> np.ndarray:
        """OOD scores ``(N,)`` float64, higher = more OOD."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_stack(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"expected a uint8 stack (N, S, S) or (N, S, S, C); got {images.dtype} {images.shape}")
    return images


def _channels(images: np.ndarray) -> int:
    return 1 if images.ndim == 3 else int(images.shape[3])


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (running statistics, no dropout) for the block, restoring the caller's mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for weight initialisation without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _image_patches(
    images: np.ndarray, patch: int, n_patches: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, np.ndarray]:
    """The content-seeded patches DisCoPatch scores (same seed -> same patches): ``(B * n, C, p, p)`` and corners."""
    corners = content_corners(images, patch, n_patches, seed)
    return extract_patches(to_tensor(images).to(device), corners, patch), corners


# ---------------------------------------------------------------------------------------------------------------------
# The DisCoPatch VAE as a detector
# ---------------------------------------------------------------------------------------------------------------------


def elbo_sigma(patch_dims: int, w_kl: float) -> float:
    """Fixed decoder standard deviation under which the VAE's training loss is a scaled negative ELBO.

    DisCoPatch trains on ``MSE_mean + w_KL * KL_sum``. Multiplying by ``1 / w_KL`` gives
    ``||x - x_hat||^2 / (D * w_KL) + KL``, i.e. the Gaussian negative log-likelihood with ``2 sigma^2 = D * w_KL``
    (plus a constant) and an unweighted KL: the ELBO the VAE actually maximised. ``D`` is C * p * p.
    """
    return math.sqrt(patch_dims * w_kl / 2.0)


class _VAEPatchBaseline(Baseline):
    """Shared machinery: the DisCoPatch VAE applied to each image's content-seeded patches, in eval mode.

    ``fit`` does nothing and returns ``self``: the VAE was already trained by DisCoPatch on the same ID training
    images, so these baselines cost no training of their own (``fit_seconds`` = 0). Pass the detector's
    seed as ``seed`` to score exactly the patches D scores.
    """

    def __init__(
        self, vae: VAE, n_patches: int, patch_size: int | None = None, seed: int = 0, batch_size: int = 256
    ) -> None:
        self.vae = vae
        self.patch_size = int(vae.cfg.patch_size if patch_size is None else patch_size)
        self.n_patches = int(n_patches)
        self.seed = int(seed)
        self.batch_size = int(batch_size)

    def fit(
        self, images: np.ndarray, labels: np.ndarray | None = None, *, max_time: float | None = None, seed: int = 0
    ) -> Baseline:
        """No-op: the VAE is already trained (by DisCoPatch). ``seed`` here is unused; patches use ``self.seed``."""
        self.fit_seconds = 0.0
        return self

    @torch.no_grad()
    def patch_terms(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per patch ``(B, n)`` float64: mean squared error, KL to N(0, I), and the corners ``(B, n, 2)``.

        The reconstruction decodes the posterior mean, so the scores are deterministic.
        """
        images = _check_stack(images)
        b, n = len(images), self.n_patches
        mse = np.empty((b, n), np.float64)
        kl = np.empty((b, n), np.float64)
        corners = np.empty((b, n, 2), np.int64)
        device = _device_of(self.vae)
        with _eval_mode(self.vae):
            for sl in _chunks(b, self.batch_size):
                x, c = _image_patches(images[sl], self.patch_size, n, self.seed, device)
                mu, logvar = self.vae.encode(x)
                recon = self.vae.decode(mu).double()
                err = (recon - x.double()).pow(2).flatten(1).mean(1)
                mu, logvar = mu.double(), logvar.double()
                k = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
                mse[sl] = err.reshape(-1, n).cpu().numpy()
                kl[sl] = k.reshape(-1, n).cpu().numpy()
                corners[sl] = c
        return mse, kl, corners


class VAEReconstruction(_VAEPatchBaseline):
    """Mean over the image's patches of the per-patch MSE between the patch and the VAE's reconstruction.

    Reconstruction error of an autoencoder trained on ID data is the classic novelty score (e.g. Japkowicz et al.
    1995; An & Cho 2015 for VAEs); here it reuses DisCoPatch's adversarial VAE on D's own patches.
    """

    name = "vae_recon"

    def score(self, images: np.ndarray) -> np.ndarray:
        mse, _, _ = self.patch_terms(images)
        return mse.mean(1)


class VAEElbo(_VAEPatchBaseline):
    """Mean over patches of the negative ELBO in nats per dimension (Kingma & Welling, ICLR 2014).

    ``-ELBO = ||x - x_hat||^2 / (2 sigma^2) + D/2 log(2 pi sigma^2) + KL(q(z|x) || N(0, I))`` with the decoder
    variance fixed and ``x_hat`` decoded from the posterior mean (a one-point estimate of the expected
    log-likelihood, deterministic). ``sigma`` defaults to :func:`elbo_sigma` of the patch dimension and ``w_kl``
    (the paper's 1e-4): the value under which DisCoPatch's training loss *is* this ELBO. Dividing by D makes patch
    sizes comparable.
    """

    name = "vae_elbo"

    def __init__(
        self,
        vae: VAE,
        n_patches: int,
        patch_size: int | None = None,
        seed: int = 0,
        batch_size: int = 256,
        *,
        w_kl: float = 1e-4,
        sigma: float | None = None,
    ) -> None:
        super().__init__(vae, n_patches, patch_size, seed, batch_size)
        self.dims = int(vae.cfg.channels) * self.patch_size**2
        self.sigma = float(elbo_sigma(self.dims, w_kl) if sigma is None else sigma)

    def patch_nll(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Negative ELBO per patch in nats per dimension ``(B, n)``, and the corners."""
        mse, kl, corners = self.patch_terms(images)
        s2 = self.sigma**2
        nll = mse * self.dims / (2 * s2) + 0.5 * self.dims * math.log(2 * math.pi * s2) + kl
        return nll / self.dims, corners

    def score(self, images: np.ndarray) -> np.ndarray:
        return self.patch_nll(images)[0].mean(1)


def png_bits(image: np.ndarray, compress_level: int = 9) -> int:
    """Length in bits of the PNG encoding (Pillow, ``compress_level``) of one uint8 ``(H, W)`` / ``(H, W, C)`` array."""
    arr = np.ascontiguousarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=compress_level)
    return 8 * buf.tell()


class InputComplexityElbo(VAEElbo):
    """Input-complexity-corrected likelihood, Serrà et al., "Input complexity and out-of-distribution detection
    with likelihood-based generative models", ICLR 2020: ``S(x) = -log2 p(x) - L(x)``.

    ``-log2 p(x)`` is bounded by the negative ELBO of :class:`VAEElbo`, converted to bits per dimension of 8-bit data
    (the density in [-1, 1] units times the bin width 2/255: ``+ log2(127.5)`` per dimension). ``L(x)`` is the PNG
    length (Pillow, ``compress_level=9``) in bits per dimension, computed on the *same* patch as the likelihood
    (the VAE only models patches); the fixed PNG container overhead shifts every score equally. Both terms are
    per-patch, then averaged over the image's patches. Sign: large when the model finds x less likely than a generic
    compressor does, so higher = more OOD (Serrà's S, used as the OOD score as in the paper).
    """

    name = "input_complexity"

    def __init__(
        self,
        vae: VAE,
        n_patches: int,
        patch_size: int | None = None,
        seed: int = 0,
        batch_size: int = 256,
        *,
        w_kl: float = 1e-4,
        sigma: float | None = None,
        compress_level: int = 9,
    ) -> None:
        super().__init__(vae, n_patches, patch_size, seed, batch_size, w_kl=w_kl, sigma=sigma)
        self.compress_level = int(compress_level)

    def score(self, images: np.ndarray) -> np.ndarray:
        images = _check_stack(images)
        nll, corners = self.patch_nll(images)
        model_bits = nll / math.log(2) + math.log2(127.5)
        p = self.patch_size
        comp = np.empty_like(model_bits)
        for i in range(len(images)):
            for j, (y, x) in enumerate(corners[i]):
                comp[i, j] = png_bits(images[i, y : y + p, x : x + p], self.compress_level) / self.dims
        return (model_bits - comp).mean(1)


# ---------------------------------------------------------------------------------------------------------------------
# Deep SVDD
# ---------------------------------------------------------------------------------------------------------------------


class _SVDDNet(nn.Module):
    """Bias-free CNN encoder: [conv 5x5 -> BN (no affine) -> LeakyReLU -> max-pool 2] per width, then a linear map.

    No bias terms and no BN affine, because Ruff et al. (2018, Prop. 2) show that a bias lets the network map every
    input to c (the trivial "hypersphere collapse" solution).
    """

    def __init__(self, channels: int, image_size: int, widths: tuple[int, ...], rep_dim: int, slope: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        side = image_size
        for a, b in zip((channels, *widths[:-1]), widths):
            layers += [
                nn.Conv2d(a, b, 5, padding=2, bias=False),
                nn.BatchNorm2d(b, eps=1e-4, affine=False),
                nn.LeakyReLU(slope),
                nn.MaxPool2d(2),
            ]
            side //= 2
        if side < 1:
            raise ValueError(f"image size {image_size} is too small for {len(widths)} pooling layers")
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[-1] * side * side, rep_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class DeepSVDD(Baseline):
    """One-class Deep SVDD, Ruff et al., "Deep One-Class Classification", ICML 2018.

    A bias-free CNN phi is trained to minimise ``mean ||phi(x) - c||^2`` over ID images (Adam, weight decay), with the
    centre c fixed to the mean output of the *initial* network on the training images (computed with batch
    statistics, as in training); coordinates of c closer to 0 than ``eps`` are pushed to +-eps so that the zero
    map is not trivially optimal. Score: squared distance to c, with BN in eval mode (running statistics), so an
    image's score does not depend on its co-batch. Differences from the paper: no autoencoder pretraining (c comes
    from the randomly initialised, seeded network), whole images (not patches), time budget instead of 150 epochs.
    The default network is the paper's CIFAR-10 one (widths 32/64/128, 128-d output).
    """

    name = "deep_svdd"

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128),
        rep_dim: int = 128,
        epochs: int = 50,
        batch_size: int = 128,
        lr: float = 1e-4,
        weight_decay: float = 1e-6,
        eps: float = 0.1,
        slope: float = 0.1,
        max_steps: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.widths = tuple(int(w) for w in widths)
        self.rep_dim = int(rep_dim)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.eps = float(eps)
        self.slope = float(slope)
        self.max_steps = max_steps
        self.device = torch.device(device)
        self.net: _SVDDNet | None = None
        self.center: torch.Tensor | None = None
        self.steps_ = 0
        self.losses_: list[float] = []

    def _embed(self, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
        assert self.net is not None
        out = []
        for sl in _chunks(len(images), batch_size):
            out.append(self.net(to_tensor(images[sl]).to(self.device)))
        return torch.cat(out)

    def fit(
        self, images: np.ndarray, labels: np.ndarray | None = None, *, max_time: float | None = None, seed: int = 0
    ) -> DeepSVDD:
        """Train on ID images until ``epochs``, ``max_steps`` or ``max_time`` seconds run out (labels ignored)."""
        images = _check_stack(images)
        t0 = time.monotonic()
        with _seeded(derive_seed(seed, "deep_svdd", "init")):
            self.net = _SVDDNet(_channels(images), images.shape[1], self.widths, self.rep_dim, self.slope)
        self.net.to(self.device).train()
        with torch.no_grad():
            c = self._embed(images, self.batch_size).mean(0)
        c = torch.where(c.abs() < self.eps, torch.where(c < 0, -self.eps, self.eps), c)
        self.center = c.detach()
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.steps_, self.losses_ = 0, []
        n = len(images)
        done = False
        for epoch in range(self.epochs):
            order = np.random.default_rng(derive_seed(seed, "deep_svdd", "epoch", epoch)).permutation(n)
            total, count = 0.0, 0
            for sl in _chunks(n, self.batch_size):
                idx = order[sl]
                if len(idx) < 2 and count:  # a 1-image tail batch adds noise to BN statistics; skip it
                    continue
                z = self.net(to_tensor(images[idx]).to(self.device))
                loss = (z - self.center).pow(2).sum(1).mean()
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
        self.net.eval()
        self.fit_seconds = time.monotonic() - t0
        return self

    @torch.no_grad()
    def score(self, images: np.ndarray) -> np.ndarray:
        images = _check_stack(images)
        if self.net is None or self.center is None:
            raise RuntimeError("DeepSVDD is not fitted")
        if len(images) == 0:
            return np.zeros(0, np.float64)
        with _eval_mode(self.net):
            z = self._embed(images)
        return (z.double() - self.center.double()).pow(2).sum(1).cpu().numpy()


# ---------------------------------------------------------------------------------------------------------------------
# Neural-Mean-Discrepancy-style statistics of D
# ---------------------------------------------------------------------------------------------------------------------


class NMDStatistics(Baseline):
    """Channel means of D's conv layers per image, modelled as a Gaussian on ID: Mahalanobis distance.

    After Dong et al., "Neural Mean Discrepancy for Efficient Out-of-Distribution Detection" (arXiv 2104.11408,
    CVPR 2022): an input's per-channel activation means, compared with the ID average, separate ID from OOD. Here the
    network is DisCoPatch's discriminator D (trained on ID, eval mode) run on the image's own content-seeded
    patches with its per-image grouping, exactly as in scoring; the feature vector is, for every conv layer, the
    channel means of the conv output *before* normalisation over the image's patches and positions - the very
    statistics that the per-image normalisation removes before D's head. We chose patches, not the whole image,
    because D's filters and statistics are those of patches. Instead of NMD's small trained classifier (which needs
    OOD examples) the vectors get a label-free Gaussian: standardised per feature with ID mean/std (subtracting the
    ID mean is NMD's "discrepancy"), Ledoit-Wolf shrunk covariance (sklearn), squared Mahalanobis distance as score.
    Fitted on ID training images only.
    """

    name = "nmd"

    def __init__(self, D: Discriminator, n_patches: int, seed: int = 0, batch_size: int = 256) -> None:
        self.D = D
        self.n_patches = int(n_patches)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.inv_cov_: np.ndarray | None = None
        self.shrinkage_: float | None = None

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        """Per-image channel means of every conv output, concatenated over layers: ``(N, sum(widths))`` float64."""
        images = _check_stack(images)
        n = self.n_patches
        device = _device_of(self.D)
        out = np.empty((len(images), sum(self.D.cfg.widths)), np.float64)
        captured: list[torch.Tensor] = []
        hooks = [blk.conv.register_forward_hook(lambda _m, _i, o: captured.append(o)) for blk in self.D.blocks]
        try:
            with _eval_mode(self.D):
                for sl in _chunks(len(images), self.batch_size):
                    captured.clear()
                    x, _ = _image_patches(images[sl], self.D.cfg.patch_size, n, self.seed, device)
                    self.D.features(x, n)
                    b = sl.stop - sl.start
                    means = [o.double().reshape(b, n, o.shape[1], -1).mean(dim=(1, 3)) for o in captured]
                    out[sl] = torch.cat(means, 1).cpu().numpy()
        finally:
            for h in hooks:
                h.remove()
        return out

    def fit(
        self, images: np.ndarray, labels: np.ndarray | None = None, *, max_time: float | None = None, seed: int = 0
    ) -> NMDStatistics:
        """Estimate the ID Gaussian of the statistics (no training; ``max_time``/``seed``/labels unused)."""
        t0 = time.monotonic()
        f = self.features(images)
        if len(f) < 2:
            raise ValueError("NMDStatistics needs at least 2 ID images")
        self.mean_ = f.mean(0)
        self.std_ = f.std(0) + 1e-12
        lw = LedoitWolf().fit((f - self.mean_) / self.std_)
        self.inv_cov_ = lw.precision_
        self.shrinkage_ = float(lw.shrinkage_)
        self.fit_seconds = time.monotonic() - t0
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        if self.inv_cov_ is None:
            raise RuntimeError("NMDStatistics is not fitted")
        z = (self.features(images) - self.mean_) / self.std_
        return np.einsum("ij,jk,ik->i", z, self.inv_cov_, z)


# ---------------------------------------------------------------------------------------------------------------------
# Label-based: a small classifier and its post-hoc scores
# ---------------------------------------------------------------------------------------------------------------------


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
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))


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

    def scorers(self, kinds: tuple[str, ...] = CLASSIFIER_SCORES, **kwargs: float) -> list[ClassifierScores]:
        """One :class:`ClassifierScores` per kind, all sharing this classifier."""
        return [ClassifierScores(self, kind, **kwargs) for kind in kinds]


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
    return np.einsum("nkd,de,nke->nk", d, inv_cov, d).min(1)


def l2_normalise(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


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
