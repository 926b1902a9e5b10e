"""Figures of the project, one module per subject; every figure function is re-exported here
(``from sourcelens import plots; plots.pair_examples(...)``).

- :mod:`.style`: the shared look (norms, colour bars, extents, scale bars, panel grids);
- :mod:`.data`: galaxy stamps per kind, the source-selection table, the diversity of the sources;
- :mod:`.simulations`: lensed/unlensed pairs, lens-parameter distributions, super-resolution examples;
- :mod:`.training`: learning curves of staged trainings;
- :mod:`.vae`: VAE reconstructions, prior samples, latent interpolation;
- :mod:`.fits`: galaxy fits, unlensed and lensed;
- :mod:`.posterior`: posterior mean and std maps of decoder fits, the calibration of their intervals;
- :mod:`.cnn`: the lens-parameter CNN: predicted vs true, residuals vs S/N and theta_E, calibration;
- :mod:`.delensing`: delensing examples per method, U-Net examples, metrics vs S/N and theta_E;
- :mod:`.leaderboard`: every source-recovery method on one test set, differences from the best with intervals;
- :mod:`.super_resolution`: super-resolution (studies 001 and 004): every method against the S/N, examples
  with residuals;
- :mod:`.lensing`: lens models, magnification maps, backward mapping (loaded on first use: it
  imports torch).
- :mod:`.workflow`: the workflow's rule graph for the README (``python -m sourcelens.plots.workflow``; not
  re-exported: it is drawn from ``snakemake --rulegraph``, not from results).

The coming studies add ``deblend.py`` here, built on :mod:`.style`.

Conventions: every function takes plain arrays or tables and returns a
:class:`matplotlib.figure.Figure` built without pyplot (no GUI backend, no global figure state;
works under Agg and on headless nodes), ready for :func:`sourcelens.io.save_figure`. Arrays are
indexed ``[row, column]`` and drawn with ``origin="lower"``; axes are offsets from the image
centre in arcsec (x to the right, y up), so lens centres ``center_x, center_y`` and source
positions share the axes. Images use an arcsinh stretch (linear below ``linear_width``,
logarithmic above), with the linear width set by the noise level where known, so faint lensed
arcs and the noise are both visible.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .cnn import cnn_calibration, cnn_predictions, cnn_residuals
from .data import filter_table_figure, source_diversity, stamps_by_kind
from .delensing import delensing_examples, delensing_vs_snr, unet_examples
from .fits import fit_comparison, fit_comparison_lensed
from .leaderboard import leaderboard_figure
from .posterior import posterior_calibration, posterior_maps
from .simulations import example_labels, format_lens_params, lens_parameter_histograms, pair_examples, sr_examples
from .style import asinh_norm, asinh_ticks
from .super_resolution import sr_method_examples, sr_noise_limit
from .training import learning_curve
from .vae import image_gallery, latent_interpolation, vae_reconstructions

_LENSING = ("plot_lens_models", "plot_magnification", "plot_backward")

__all__ = [
    "asinh_norm", "asinh_ticks", "format_lens_params", "example_labels",
    "stamps_by_kind", "filter_table_figure", "source_diversity",
    "pair_examples", "lens_parameter_histograms", "sr_examples",
    "learning_curve",
    "vae_reconstructions", "image_gallery", "latent_interpolation",
    "fit_comparison", "fit_comparison_lensed",
    "posterior_maps", "posterior_calibration",
    "cnn_predictions", "cnn_residuals", "cnn_calibration",
    "delensing_examples", "unet_examples", "delensing_vs_snr",
    "leaderboard_figure",
    "sr_noise_limit", "sr_method_examples",
    *_LENSING,
]


def __getattr__(name: str) -> Any:
    """The lensing figures, imported on first use (so that other figures do not import torch)."""
    if name in _LENSING:
        return getattr(import_module(".lensing", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
