"""Networks: the patch discriminator (the detector) and the VAE that makes its negatives."""

from .discriminator import Discriminator
from .norm import PatchGroupNorm, make_norm
from .vae import VAE, kl_divergence

__all__ = ["VAE", "Discriminator", "PatchGroupNorm", "kl_divergence", "make_norm"]
