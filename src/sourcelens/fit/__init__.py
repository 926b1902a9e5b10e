"""Galaxy fits: the VAE decoder as a differentiable galaxy model (batched L-BFGS in torch) and the
lenstronomy baselines it is compared with (elliptical Sérsic, Sérsic + shapelets).

``from sourcelens.fit import fit_decoder, fit_sersic, fit_sersic_shapelets``. Submodules are
imported lazily, so ``sourcelens.fit.decoder`` never loads lenstronomy and other fitting modules
in this package (``sourcelens.fit.lensed``) are independent of this file.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DecoderFit": "decoder", "fit_decoder": "decoder", "render": "decoder", "n_free_params": "decoder",
    "SersicFit": "baselines", "fit_sersic": "baselines", "fit_sersic_shapelets": "baselines",
    "fit_sersic_batch": "baselines", "shapelet_n_params": "baselines", "SERSIC_N_PARAMS": "baselines",
    "add_noise_to_level": "baselines", "shapelet_beta": "baselines",
    "fit_metrics": "compare", "fit_summary": "compare",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
