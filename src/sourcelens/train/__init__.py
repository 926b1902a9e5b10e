"""Model training with Lightning: the generic staged machinery and one module per model.

:mod:`.staged` runs a model's stages in order with checkpoints, an exact resume and skipped finished stages
(:func:`train_stages`); :mod:`.checkpoints` owns the checkpoint folder (:func:`clean_checkpoints`);
:mod:`.determinism` and :mod:`.callbacks` are its parts. :mod:`.vae` is the galaxy VAE (study 000): its
LightningModule, losses and :func:`train_vae`. The CNN, U-Net, super-resolution networks and the deblender
each add a module here with their LightningModule and a ``train_<model>`` built on :func:`train_stages`.

``from sourcelens.train import train_vae, clean_checkpoints``. Submodules are imported lazily, so
:func:`clean_checkpoints` does not load Lightning.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "PROGRESS_FILE": "checkpoints", "RUNTIME_KEYS": "checkpoints", "clean_checkpoints": "checkpoints",
    "fingerprint": "checkpoints",
    "EpochSampler": "determinism", "ReseedEachBatch": "determinism",
    "ExactResume": "callbacks", "MetricsHistory": "callbacks",
    "StagedResult": "staged", "train_stages": "staged",
    "LR_FACTOR": "vae", "METRIC_COLUMNS": "vae", "RECON_LOSSES": "vae", "REFERENCE_GALAXIES": "vae",
    "SIGMA_FLOOR": "vae", "VAEModule": "vae", "init_output_bias": "vae", "load_stamps": "vae",
    "reconstruction_loss": "vae", "reference_latents": "vae", "train_vae": "vae", "vae_settings": "vae",
    "SR_METHODS": "sr", "sr_settings": "sr", "train_sr": "sr", "train_sisr": "sr", "train_lenssr": "sr",
    "train_pisr": "sr",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
