"""Neural network models (plain torch modules): the VAE galaxy model, and later CNN, U-Net,
LensSR, physics-informed super-resolution and the deblender."""

from .vae import VAE, FusedDecoder, load_vae, save_vae

__all__ = ["VAE", "FusedDecoder", "load_vae", "save_vae"]
