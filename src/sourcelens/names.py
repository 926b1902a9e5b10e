"""Names shared by the whole pipeline: the dataset splits and the lens parameters of study 002.

One home for each, so that the workflow, the simulations, the models and the figures agree
(and so that importing a name does not import lenstronomy, torch or matplotlib).
"""

from __future__ import annotations

#: Dataset splits, in the order of the rules' outputs (split by source id: no galaxy in two).
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: The 8 lens parameters of study 002, in the order of every ``lens_params`` array: Einstein radius
#: ``theta_E`` (arcsec), 3-D slope ``gamma`` (2 = isothermal), ellipticity ``e1, e2`` (lenstronomy's),
#: lens centre ``center_x, center_y`` (arcsec) and external shear ``gamma1, gamma2``.
LENS_PARAMETERS: tuple[str, ...] = ("theta_E", "gamma", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")

#: Source kinds, in the order every table and figure shows them: real galaxies first (a headline carried by
#: easy drawn galaxies would mislead), then GalSim's fits of real galaxies, galaxies drawn from priors, and the
#: XDF picture's cut-outs (morphology only: not linear flux).
SOURCE_KINDS: tuple[str, ...] = ("cosmos", "cosmos_fit", "parametric", "xdf")

#: What each kind is, for table captions and figure labels.
SOURCE_KIND_LABELS: dict[str, str] = {
    "cosmos": "COSMOS (HST, real)",
    "cosmos_fit": "COSMOS fits (GalSim)",
    "parametric": "parametric (GalSim priors)",
    "xdf": "XDF (morphology only)",
}

__all__ = ["LENS_PARAMETERS", "SOURCE_KINDS", "SOURCE_KIND_LABELS", "SPLITS"]
