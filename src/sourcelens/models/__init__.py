"""Neural network models (plain torch modules): the VAE galaxy model, and later CNN, U-Net,
LensSR, physics-informed super-resolution and the deblender."""

from .vae import VAE, FusedDecoder, decode_latents, encode_images, frozen, load_vae, reconstruct, save_vae

__all__ = ["VAE", "FusedDecoder", "decode_latents", "encode_images", "frozen", "load_vae", "reconstruct", "save_vae"]
