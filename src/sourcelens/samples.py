"""The real-galaxy samples shipped with sourcelens (``src/sourcelens/galaxies/``, see its README) and the
references that every output made from COSMOS galaxies records."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLES", "COSMOS_CITATIONS", "sample_dir", "catalogue_dir", "data_citations"]

GALAXIES = Path(__file__).resolve().parent / "galaxies"

#: Shipped samples: name -> one line on what it is (the folder of the same name under ``galaxies/``).
SAMPLES: dict[str, str] = {
    "cosmos_btk_ext26": "100 real HST/ACS F814W COSMOS stamps with PSFs (LSST DESC BlendingToolKit, MIT)",
    "cosmos23.5_example_params": "GalSim's 100-galaxy COSMOS 23.5 example: Sérsic / bulge+disk fits, PSFs, "
                                 "no images (GalSim, BSD-3-Clause)",
}

#: Where each shipped sample comes from (recorded with the citations).
SAMPLE_ORIGINS: dict[str, str] = {
    "cosmos_btk_ext26": "LSST DESC BlendingToolKit, data/cosmos, https://github.com/LSSTDESC/BlendingToolKit (MIT)",
    "cosmos23.5_example_params": "GalSim, examples/data, https://github.com/GalSim-developers/GalSim (BSD-3-Clause)",
}

#: The XDF picture (scikit-image's ``hubble_deep_field``, an 8-bit display-stretched JPEG: morphology only).
XDF_CITATION = ("Illingworth, G. D., et al. 2013, ApJS, 209, 6 (Hubble eXtreme Deep Field; image via scikit-image "
                "data.hubble_deep_field, NASA/ESA public domain)")

#: References of the COSMOS galaxies (any sample, shipped or downloaded).
COSMOS_CITATIONS: tuple[str, ...] = (
    "Koekemoer, A. M., et al. 2007, ApJS, 172, 196 (COSMOS HST/ACS imaging)",
    "Mandelbaum, R., et al. 2012, MNRAS, 420, 1518 (COSMOS galaxy samples for GalSim)",
    "Rowe, B. T. P., et al. 2015, Astronomy and Computing, 10, 121 (GalSim)",
)


def sample_dir(name: str) -> Path:
    """The folder of a shipped sample; ValueError naming the allowed names for an unknown one."""
    if name not in SAMPLES:
        raise ValueError(f"unknown shipped galaxy sample {name!r}; shipped: {', '.join(SAMPLES)}")
    return GALAXIES / name


def catalogue_dir(block: dict) -> Path:
    """The RealGalaxyCatalog folder of a ``sources.cosmos`` / ``sources.cosmos_fit`` config block: ``dir`` (a
    downloaded sample) if set, else the shipped ``sample``."""
    if block.get("dir"):
        return Path(block["dir"])
    if block.get("sample"):
        return sample_dir(block["sample"])
    raise ValueError("neither 'dir' nor 'sample' is set")


def data_citations(config: dict | None) -> list[str]:
    """The references an output made with ``config`` must carry: the COSMOS papers when COSMOS galaxies (real or
    fitted) are among the sources, the origin of each shipped sample used, the XDF's when it is; empty otherwise."""
    sources = (config or {}).get("sources") or {}
    used = sources.get("kinds") or []
    kinds = [k for k in ("cosmos", "cosmos_fit") if k in used]
    out = list(COSMOS_CITATIONS) if kinds else []
    if "xdf" in used:
        out.append(XDF_CITATION)
    for kind in kinds:
        block = sources.get(kind) or {}
        if not block.get("dir") and block.get("sample") in SAMPLE_ORIGINS:
            out.append(f"sample {block['sample']}: {SAMPLE_ORIGINS[block['sample']]}")
    return list(dict.fromkeys(out))
