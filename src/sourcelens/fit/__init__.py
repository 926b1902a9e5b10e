"""Source fits: one fitter per model, each through any imaging problem (a stamp as it is, or a lensed image
through a known lens).

- :mod:`~sourcelens.fit.decoder`: the VAE decoder as a galaxy model (batched, preconditioned L-BFGS);
- :mod:`~sourcelens.fit.profiles`: the elliptical Sérsic and Sérsic + shapelets baselines (torch);
- :mod:`~sourcelens.fit.pixelated`: the regularised pixelated source (linear inversion);
- :mod:`~sourcelens.fit.common`: the result record, the imaging problem, amplitudes and moments;
- :mod:`~sourcelens.fit.lbfgs`: many independent L-BFGS minimisations at once, and their preconditioning;
- :mod:`~sourcelens.fit.scenes`: lensed test scenes (lenstronomy) and their torch counterpart;
- :mod:`~sourcelens.fit.galaxies` and :mod:`~sourcelens.fit.lensed`: the unlensed and lensed fits of study 000;
- :mod:`~sourcelens.fit.compare`: per-galaxy metrics and per-method summaries.

``from sourcelens.fit import fit_decoder, fit_sersic, ...``: names are imported lazily from their modules.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "DecoderFit": "decoder", "fit_decoder": "decoder", "render": "decoder", "n_free_params": "decoder",
    "FitResult": "common", "ImagingProblem": "common", "best_amplitude": "common", "image_moments": "common",
    "fit_sersic": "profiles", "fit_sersic_shapelets": "profiles", "shapelet_n_params": "profiles",
    "shapelet_basis": "profiles", "SERSIC_N_PARAMS": "profiles",
    "fit_pixelated": "pixelated", "solve_pixelated": "pixelated",
    "add_noise_to_level": "galaxies", "fit_test_galaxies": "galaxies",
    "fit_lensed_all": "lensed", "fit_decoder_lensed": "lensed",
    "fit_metrics": "compare", "fit_summary": "compare",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
