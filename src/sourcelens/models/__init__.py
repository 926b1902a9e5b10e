"""Neural network models (plain torch modules): the VAE galaxy model (study 000), the lens-parameter CNN and the
U-Net delenser (study 002); later LensSR, physics-informed super-resolution and the deblender."""

from .cnn import LensCNN, load_cnn, predict_lens_params, save_cnn
from .common import lensed_image_scale, normalise_lensed
from .unet import UNet, delens, load_unet, save_unet
from .vae import VAE, FusedDecoder, decode_latents, encode_images, frozen, load_vae, reconstruct, save_vae

__all__ = ["VAE", "FusedDecoder", "decode_latents", "encode_images", "frozen", "load_vae", "reconstruct", "save_vae",
           "LensCNN", "load_cnn", "predict_lens_params", "save_cnn", "UNet", "delens", "load_unet", "save_unet",
           "lensed_image_scale", "normalise_lensed"]
