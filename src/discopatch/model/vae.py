"""The VAE that manufactures D's negatives during training (docs/METHOD.md, section 2.2).

Its reconstructions lack high frequencies (blur-like) and its prior samples carry excess high frequencies
(noise-like); D learns to call both fake. Encoder mirrors D with running-statistics BatchNorm; decoder uses
transposed convolutions and ends in Tanh so outputs live in the same [-1, 1] range as real patches.
Only needed for training: the saved detector keeps D alone.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig


def _down(in_ch: int, out_ch: int, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), nn.BatchNorm2d(out_ch), nn.LeakyReLU(slope))


def _up(in_ch: int, out_ch: int, slope: float) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(slope),
    )


class VAE(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        s = cfg.final_spatial
        chans = (cfg.channels, *w)
        self.encoder = nn.Sequential(*(_down(a, b, cfg.negative_slope) for a, b in zip(chans[:-1], chans[1:])))
        flat = w[-1] * s * s
        self.fc_mu = nn.Linear(flat, cfg.latent_dim)
        self.fc_logvar = nn.Linear(flat, cfg.latent_dim)
        self.decoder_input = nn.Linear(cfg.latent_dim, flat)
        rev = tuple(reversed(w))
        ups = [_up(a, b, cfg.negative_slope) for a, b in zip(rev[:-1], rev[1:])]
        ups.append(_up(rev[-1], rev[-1], cfg.negative_slope))
        self.decoder = nn.Sequential(*ups)
        self.final = nn.Sequential(nn.Conv2d(rev[-1], cfg.channels, 3, padding=1), nn.Tanh())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)
        with torch.autocast(device_type=h.device.type, enabled=False):
            h = h.float()
            return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        w = self.cfg.widths[-1]
        s = self.cfg.final_spatial
        h = self.decoder_input(z).view(-1, w, s, s)
        out: torch.Tensor = self.final(self.decoder(h))
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode(z), mu, logvar

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``n`` draws of z ~ N(0, I): the "generated" negatives."""
        device = self.fc_mu.weight.device
        z = torch.randn(n, self.cfg.latent_dim, device=device, generator=generator)
        return self.decode(z)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over the latent and averaged over the batch (the paper's reduction)."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
