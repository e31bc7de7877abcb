"""Density/likelihood baselines on the DisCoPatch VAE: reconstruction error, the ELBO and the input-complexity-
corrected ELBO (Serrà et al., ICLR 2020)."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from ...model import VAE
from .base import Baseline, _check_stack, _chunks, _device_of, _eval_mode, _image_patches


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
        scores: np.ndarray = mse.mean(1)
        return scores


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
        scores: np.ndarray = self.patch_nll(images)[0].mean(1)
        return scores


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
        scores: np.ndarray = (model_bits - comp).mean(1)
        return scores
