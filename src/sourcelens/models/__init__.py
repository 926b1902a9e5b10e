"""Neural network models (plain torch modules): the VAE galaxy model (study 000), the lens-parameter CNN and the
U-Net delenser (study 002); the super-resolution networks SISR, LensSR (study 001) and PISR (study 004); later the
deblender."""

from .cnn import LensCNN, load_cnn, predict_lens_params, save_cnn
from .common import lensed_image_scale, normalise_lensed
from .lenssr import LensSRNoSource, load_lenssr, save_lenssr
from .pisr import PISR, load_pisr, pisr_super_resolve, save_pisr
from .sisr import SISR, bicubic_super_resolve, load_sisr, save_sisr, super_resolve
from .unet import UNet, delens, load_unet, save_unet
from .vae import VAE, FusedDecoder, decode_latents, encode_images, frozen, load_vae, reconstruct, save_vae

__all__ = ["VAE", "FusedDecoder", "decode_latents", "encode_images", "frozen", "load_vae", "reconstruct", "save_vae",
           "LensCNN", "load_cnn", "predict_lens_params", "save_cnn", "UNet", "delens", "load_unet", "save_unet",
           "lensed_image_scale", "normalise_lensed", "SISR", "bicubic_super_resolve", "load_sisr", "save_sisr",
           "super_resolve", "LensSRNoSource", "load_lenssr", "save_lenssr", "PISR", "load_pisr", "pisr_super_resolve",
           "save_pisr"]
