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

#: Super-resolution methods (studies 001 and 004), in the order of every table and figure: bicubic upsampling
#: (no training), the supervised SISR (the upper reference, trained on the truth), LensSR with and without
#: source (study 001), PISR (study 004, unsupervised).
SR_METHODS: tuple[str, ...] = ("bicubic", "supervised", "lenssr_with_source", "lenssr_no_source", "pisr")

#: The super-resolution methods that yield a source (the source network's ``Ŝ`` of LensSR without source, PISR's
#: ``f``), besides the super-resolved image.
SR_SOURCE_METHODS: tuple[str, ...] = ("lenssr_no_source", "pisr")

#: How each super-resolution method uses a lens: "needed" (PISR: its operator), "source" (LensSR without
#: source: the image network needs none, the source network sees i∘β), "unused".
SR_LENS_USE: dict[str, str] = {"bicubic": "unused", "supervised": "unused", "lenssr_with_source": "unused",
                               "lenssr_no_source": "source", "pisr": "needed"}

#: The PISR ablation of study 004's loss terms, added one by one: variant name → (label, settings over the
#: config's ``super_resolution.pisr`` block; "+ TV" keeps its ``tv_weight``), trained as method ``pisr``
#: (:func:`sourcelens.train.sr.sr_method_config`).
PISR_ABLATION: dict[str, tuple[str, dict]] = {
    "pisr_chi2": ("χ² alone", {"tv_weight": 0.0, "mask": False, "magnification": False}),
    "pisr_tv": ("+ TV", {"mask": False, "magnification": False}),
    "pisr_tv_mask": ("+ convergence mask", {"mask": True, "magnification": False}),
    "pisr_tv_mask_magnification": ("+ magnification weighting", {"mask": True, "magnification": True}),
}

__all__ = ["LENS_PARAMETERS", "SOURCE_KINDS", "SOURCE_KIND_LABELS", "SPLITS", "SR_METHODS", "SR_SOURCE_METHODS", "SR_LENS_USE",
           "PISR_ABLATION"]
