"""One-class baseline: Deep SVDD (Ruff et al., ICML 2018)."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ...patches import to_tensor
from ...runtime import derive_seed
from .base import Baseline, _channels, _check_stack, _chunks, _eval_mode, _seeded


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
        out: torch.Tensor = self.fc(self.features(x).flatten(1))
        return out


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
