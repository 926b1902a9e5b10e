"""The ``sourcelens`` command line: tools for users' own files.

    sourcelens info FILE [--rows N]      summary of any sourcelens output (HDF5, CSV, FITS, JSON)
    sourcelens check-config FILE...      every check the workflow makes of a config (schema, cross-key rules)
    sourcelens clean-checkpoints [DIR...]  remove training checkpoint folders (default results/checkpoints/*)
    sourcelens vae encode MODEL FITS [-o OUT]              latent means of a stamp or an N×H×W cube (.npy or FITS)
    sourcelens vae decode MODEL LATENTS -o OUT.fits        images decoded from latents (.npy or FITS)
    sourcelens vae reconstruct MODEL FITS -o OUT.fits      encode then decode (the VAE's reconstruction)
    sourcelens vae fit MODEL FITS --sigma S -o OUT.fits    decoder fit (latents, flux, offset, zoom; L-BFGS)
    sourcelens lens predict MODEL FITS [-o OUT]            lens parameters ± 1σ per image (CSV or FITS table)
    sourcelens delens MODEL FITS -o OUT.fits               U-Net sources (peak-normalised, on the source grid)
    sourcelens super-resolve MODEL FITS [--lens L.yaml] -o OUT.fits   super-resolved images (and sources)
    sourcelens deblend MODEL BLENDS.fits -o OUT.fits       the central galaxy of multi-band blends (study 003)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .names import SR_LENS_USE  # how each super-resolution method uses a lens

DEFAULT_CHECKPOINTS = "results/checkpoints/*"   # the training caches (sourcelens.train checkpoint folders)


def _array_lines(ds, indent: str) -> list[str]:
    """Shape, dtype, chunks and attributes of an HDF5 dataset, and value ranges of its first rows."""
    extra = ", ".join(f"{k}={v}" for k, v in ds.attrs.items())
    lines = [f"{indent}{ds.name:<21} {ds.shape!s:<20} {ds.dtype}  chunks={ds.chunks} {extra}".rstrip()]
    if ds.size and ds.dtype.kind == "f":
        n = min(len(ds), 64) if ds.ndim else 1
        sample = ds[:n] if ds.ndim else ds[()]
        lines.append(f"{indent}{'':<21} min={np.min(sample):.4g} max={np.max(sample):.4g} mean={np.mean(sample):.4g}"
                     + (f"  (first {n} rows)" if ds.ndim else ""))
    return lines


def _group_lines(group, indent: str) -> list[str]:
    """Lines for the arrays of an HDF5 group and, recursively, its subgroups (the root's /meta apart)."""
    import h5py

    lines = []
    for name in group:
        node = group.get(name)
        if group.name == "/" and name == "meta" and isinstance(node, h5py.Group):
            continue
        if isinstance(node, h5py.Group):
            extra = ", ".join(f"{k}={v}" for k, v in node.attrs.items())
            lines.append(f"{indent}{node.name}/  (group, {len(node)} members) {extra}".rstrip())
            lines += _group_lines(node, indent + "  ")
        elif isinstance(node, h5py.Dataset):
            lines += _array_lines(node, indent)
        else:
            lines.append(f"{indent}{group.name.rstrip('/')}/{name}  (unresolved link)")
    return lines


def _meta_lines(fh, rows: int) -> list[str]:
    """Size, first rows and category counts of the /meta table."""
    from .io import read_meta_group

    meta = read_meta_group(fh)
    lines = [f"  meta: {len(meta)} rows × {len(meta.columns)} columns"]
    if len(meta):
        lines.append("    " + meta.head(rows).to_string(max_colwidth=24).replace("\n", "\n    "))
        for col in ("kind", "split", "lens_model", "augmentation"):
            if col in meta:
                lines.append(f"    {col} counts: {meta[col].value_counts().to_dict()}")
        if "source_id" in meta:
            lines.append(f"    distinct source_id: {meta['source_id'].nunique()}")
    return lines


def _describe_hdf5(path: Path, rows: int) -> str:
    import h5py

    from .io import decode_attrs, reading_h5

    lines = [f"{path}  (HDF5)"]
    with reading_h5(path) as fh:
        attrs = decode_attrs(fh.attrs)
        prov = attrs.pop("provenance", None)
        lines += [f"  attr {key}: {value}" for key, value in attrs.items()]
        lines.append("  arrays:")
        lines += _group_lines(fh, "    ")
        if isinstance(fh.get("meta"), h5py.Group):
            lines += _meta_lines(fh, rows)
    if isinstance(prov, dict):
        versions = prov.get("versions", {})
        lines.append(f"  provenance: git {prov.get('git_commit')}, rule {prov.get('rule', '?')}, "
                     + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return "\n".join(lines)


def _leading_comments(path: Path) -> list[str]:
    """The '#' lines at the top of a text table (units and origin, as ``sourcelens lens predict`` writes)."""
    lines = []
    with open(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            lines.append(line.rstrip("\n"))
    return lines


def _describe(path: Path, rows: int) -> str:
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return _describe_hdf5(path, rows)
    if suffix in (".csv", ".tsv"):
        import pandas as pd

        comments = _leading_comments(path)
        df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", skiprows=len(comments))
        return "\n".join([f"{path}  (table, {len(df)} rows × {len(df.columns)} columns)", *comments,
                          df.head(rows).to_string()])
    if suffix in (".fits", ".fit", ".fz"):
        from astropy.io import fits

        with fits.open(path) as hdul:
            out = [f"{path}  (FITS)"]
            for i, hdu in enumerate(hdul):
                shape = getattr(hdu, "shape", None) or (hdu.data.shape if hdu.data is not None else None)
                out.append(f"  HDU {i} {hdu.name} {type(hdu).__name__} shape={shape}")
            return "\n".join(out)
    if suffix == ".json":
        return f"{path}  (JSON)\n" + json.dumps(json.loads(path.read_text()), indent=2)[:4000]
    raise ValueError(f"don't know how to describe '{path}' (HDF5, CSV/TSV, FITS or JSON)")


# --------------------------------------------------------------------------------------------
# sourcelens vae ...: the VAE on users' own galaxy stamps (FITS)
# --------------------------------------------------------------------------------------------
class CommandError(ValueError):
    """A user-facing error of a command on users' files (``vae``, ``lens``, ``delens``): bad input file, size,
    values; printed as one line, exit status 1."""


def _add_vae_parser(sub) -> None:
    p_vae = sub.add_parser("vae", help="encode, decode, reconstruct or fit galaxy stamps with a trained VAE",
                           description="Galaxy stamps are FITS images: one 2-D stamp or an N×H×W cube "
                                       "(the first HDU with data), H = W = the model's image size.")
    vsub = p_vae.add_subparsers(dest="vae_command", required=True)

    def common(p, data_help: str):
        p.add_argument("model", type=Path, help="VAE model file (sourcelens.models.save_vae, e.g. results/models/vae.pt)")
        p.add_argument("input", type=Path, help=data_help)

    def stamp_options(p):
        p.add_argument("--resize", action="store_true",
                       help="resample stamps of another size to the model's (anti-aliased; changes the noise)")
        p.add_argument("--hdu", default=None, help="HDU (index or name) to read; default the first with data")

    p = vsub.add_parser("encode", help="latent means (and log-variances) of stamps")
    common(p, "FITS stamp or cube")
    stamp_options(p)
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="OUT.npy (N×L latent means) or OUT.fits (table: z, logvar, peak); "
                        "default <input stem>_latents.npy beside the input")
    p = vsub.add_parser("decode", help="images decoded from latents")
    common(p, "latents: .npy (N×L or L) or FITS (table with a 'z' column, or an N×L image)")
    p.add_argument("-o", "--output", type=Path, required=True, help="OUT.fits (a stamp, or an N×H×W cube)")
    p.add_argument("--peak", type=float, default=None,
                   help="multiply the decoded images by this (default: the 'peak' column of a FITS table, else 1)")
    p = vsub.add_parser("reconstruct", help="the VAE's reconstruction (decode of the encoder mean)")
    common(p, "FITS stamp or cube")
    stamp_options(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="OUT.fits, same shape and units as the input")
    p = vsub.add_parser("fit", help="fit stamps with the decoder (latents, flux, centre offset, zoom)")
    common(p, "FITS stamp or cube")
    stamp_options(p)
    p.add_argument("--sigma", required=True,
                   help="noise sigma in the image's units: a number, or a FITS file of per-pixel sigma maps "
                        "shaped like the input")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="OUT.fits: the model (primary HDU, shaped like the input) and a FITS table 'FIT' "
                        "(z, flux, dx, dy [pixels], scale, chi2, chi2_nu per stamp)")
    p.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations (default 200)")
    p.add_argument("--init", choices=("encoder", "prior"), default="encoder", help="start (default: encoder mean)")
    p.add_argument("--prior-weight", type=float, default=1.0, help="weight of the N(0, 1) latent prior (default 1)")
    p.add_argument("--posterior", choices=("laplace", "nuts"), default=None,
                   help="also write the posterior mean and standard deviation of the model per pixel (HDUs "
                        "POSTERIOR_MEAN and POSTERIOR_STD, shaped like the input; the FIT table gains the "
                        "parameters' standard deviations): laplace (Gaussian at the fit, about 0.3 s a stamp) or "
                        "nuts (Pyro's No-U-Turn sampler, tens of seconds a stamp)")
    p.add_argument("--samples", type=_positive_int, default=200,
                   help="posterior draws per stamp for --posterior (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior draws (default 0)")


def _load_model(path: Path):
    from .models.vae import load_vae

    if not path.is_file():
        raise CommandError(f"no such model file: {path}")
    try:
        return load_vae(path)
    except Exception as err:  # torch raises many kinds for a wrong file
        raise CommandError(f"cannot load model '{path}': {err}") from err


def _hdu_listing(hdul) -> str:
    """'N HDU(s) (0: PRIMARY, 1: SCI, ...)' for messages about a FITS file's HDUs."""
    names = ", ".join(f"{i}: {h.name or '(no name)'}" for i, h in enumerate(hdul))
    return f"{len(hdul)} HDU{'s' if len(hdul) != 1 else ''} ({names})"


def _select_hdu(hdul, hdu: str, path: Path):
    """The HDU ``--hdu`` names (an index or an EXTNAME); an error listing the HDUs if there is none."""
    key: int | str = int(hdu) if str(hdu).isdigit() else hdu
    try:
        chosen = hdul[key]
    except (IndexError, KeyError) as err:
        raise CommandError(f"--hdu {hdu} does not exist: '{path}' has {_hdu_listing(hdul)}") from err
    if chosen.data is None or not getattr(chosen, "is_image", False):
        what = "has no data" if chosen.data is None else f"is a {type(chosen).__name__}, not an image"
        raise CommandError(f"--hdu {hdu}: that HDU of '{path}' {what}; the file has {_hdu_listing(hdul)}")
    return chosen


def _read_fits_array(path: Path, hdu: str | None = None) -> tuple[np.ndarray, Any]:
    """The image of HDU ``hdu`` (default: the first image HDU with data) of a FITS file, and its header."""
    from astropy.io import fits

    if path.is_dir():
        raise CommandError(f"'{path}' is a directory, not a FITS file")
    if not path.is_file():
        raise CommandError(f"no such file: {path}")
    try:
        with fits.open(path) as hdul:
            if hdu is not None:
                chosen = _select_hdu(hdul, hdu, path)
            else:
                chosen = next((h for h in hdul if h.data is not None and getattr(h, "is_image", False)), None)
                if chosen is None:
                    raise CommandError(f"'{path}' has no image HDU with data; it has {_hdu_listing(hdul)}")
            return np.array(chosen.data, dtype=np.float64), chosen.header.copy()
    except CommandError:
        raise
    except (OSError, TypeError, ValueError) as err:  # not FITS, damaged or truncated (astropy raises all three)
        raise CommandError(f"cannot read FITS file '{path}': {err}") from err


RESIZE_HINT = "cut or resample them, or pass --resize"


def _read_stamps(path: Path, size: int | None, resize: bool = False, hdu: str | None = None, *,
                 hint: str = RESIZE_HINT) -> tuple[np.ndarray, bool, Any]:
    """Stamps (N, size, size) float64 from a FITS stamp or cube (``size`` None: any square size); also whether
    the input was 2-D. ``hint``: what to do about a wrong size, for the message."""
    data, header = _read_fits_array(path, hdu)
    if data.ndim not in (2, 3):
        raise CommandError(f"'{path}': expected a 2-D stamp or an N×H×W cube, got shape {data.shape}")
    single = data.ndim == 2
    cube = data[None] if single else data
    bad = ~np.isfinite(cube).all(axis=(1, 2))
    if bad.any():
        which = np.flatnonzero(bad)
        where = "" if single else f" (stamps {', '.join(map(str, which[:10]))}{' ...' if len(which) > 10 else ''})"
        raise CommandError(f"'{path}' contains NaN or infinite pixels{where}; mask or fill them first")
    if size is None:
        if cube.shape[1] != cube.shape[2]:
            raise CommandError(f"'{path}': stamps must be square, got {cube.shape[1]}×{cube.shape[2]}")
        size = cube.shape[1]
    if cube.shape[1:] != (size, size):
        if not resize:
            raise CommandError(
                f"'{path}': stamps are {cube.shape[1]}×{cube.shape[2]} but the model takes {size}×{size}; {hint}")
        from skimage.transform import resize as sk_resize

        cube = np.stack([sk_resize(img, (size, size), order=1, anti_aliasing=True, preserve_range=True)
                         for img in cube])
    return cube, single, header


def _peaks(stamps: np.ndarray, path: Path) -> np.ndarray:
    peaks = stamps.max(axis=(1, 2))
    if (peaks <= 0).any():
        raise CommandError(f"'{path}': stamps {np.flatnonzero(peaks <= 0).tolist()[:10]} have no positive pixel")
    return peaks


def _encode(vae, stamps: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent means and log-variances of peak-normalised stamps (the VAE's training normalisation)."""
    from .models import encode_images

    peaks = _peaks(stamps, path)
    mu, logvar = encode_images(vae, stamps / peaks[:, None, None])
    return mu, logvar, peaks


def _write_fits(path: Path, image: np.ndarray, header_cards: dict[str, Any], table=None, extra=()) -> None:
    from astropy.io import fits

    from .io import atomic_path

    primary = fits.PrimaryHDU(np.asarray(image, dtype=np.float32))
    for key, value in header_cards.items():
        primary.header[key] = value
    hdus = [primary] + ([table] if table is not None else []) + list(extra)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)


def _model_cards(model_path: Path, vae, command: str) -> dict[str, Any]:
    return {"CREATOR": "sourcelens vae " + command, "VAEMODEL": str(model_path.name)[:60],
            "LATDIM": (vae.latent_dim, "latent dimension"), "IMSIZE": (vae.image_size, "model stamp size")}


def _read_latents(path: Path, latent_dim: int) -> tuple[np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise CommandError(f"no such file: {path}")
    peak = None
    if path.suffix.lower() == ".npy":
        z = np.load(path)
    elif path.suffix.lower() in (".fits", ".fit", ".fts"):
        from astropy.io import fits

        with fits.open(path) as hdul:
            table = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
            if table is not None:
                if "z" not in table.columns.names:
                    raise CommandError(f"'{path}': FITS table has no 'z' column")
                z = np.array(table.data["z"], dtype=np.float64)
                if "peak" in table.columns.names:
                    peak = np.array(table.data["peak"], dtype=np.float64)
            else:
                z, _ = _read_fits_array(path)
    else:
        raise CommandError(f"'{path}': latents must be a .npy or FITS file")
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise CommandError(f"'{path}': expected N×{latent_dim} latents for this model, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise CommandError(f"'{path}' contains NaN or infinite latents")
    return z, peak


def _check_output(path: Path, example: str = "out.fits", option: str = "-o/--output") -> None:
    """Refuse an output path that is a directory or lies under a file, before any work is done."""
    if path.is_dir():
        raise CommandError(f"{option} '{path}' is a directory; give a file name, e.g. -o {path / example}")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise CommandError(f"{option} '{path}': '{parent}' is a file, not a directory")


def _output_path(args) -> Path:
    """The command's output file: ``-o``, or for ``encode`` the default beside the input."""
    if args.output is not None:
        return args.output
    return args.input.with_name(args.input.stem + "_latents.npy")


def _run_vae(args) -> int:
    from astropy.io import fits

    from .io import atomic_path
    from .models import decode_latents

    args.output = _output_path(args)
    _check_output(args.output, "out.npy" if args.vae_command == "encode" else "out.fits")
    vae = _load_model(args.model)
    cmd = args.vae_command
    if cmd == "decode":
        z, peak = _read_latents(args.input, vae.latent_dim)
        images = decode_latents(vae, z)
        scale = np.full(len(z), args.peak) if args.peak is not None else (peak if peak is not None else np.ones(len(z)))
        images = images * scale[:, None, None]
        _write_fits(args.output, images[0] if len(images) == 1 else images, _model_cards(args.model, vae, cmd))
        print(f"decoded {len(z)} latent vector(s) -> {args.output}")
        return 0

    stamps, single, _ = _read_stamps(args.input, vae.image_size, args.resize, args.hdu)
    squeeze = (lambda a: a[0]) if single else (lambda a: a)
    if cmd == "encode":
        mu, logvar, peaks = _encode(vae, stamps, args.input)
        out = args.output
        if out.suffix.lower() == ".npy":
            with atomic_path(out) as tmp, open(tmp, "wb") as fh:
                np.save(fh, squeeze(mu))
        elif out.suffix.lower() in (".fits", ".fit", ".fts"):
            table = fits.BinTableHDU.from_columns([
                fits.Column(name="z", format=f"{vae.latent_dim}D", array=mu.astype(np.float64)),
                fits.Column(name="logvar", format=f"{vae.latent_dim}D", array=logvar.astype(np.float64)),
                fits.Column(name="peak", format="D", array=peaks),
            ], name="LATENTS")
            primary = fits.PrimaryHDU()
            for key, value in _model_cards(args.model, vae, cmd).items():
                primary.header[key] = value
            with atomic_path(out) as tmp:
                fits.HDUList([primary, table]).writeto(tmp, overwrite=True)
        else:
            raise CommandError(f"output '{out}' must end in .npy or .fits")
        print(f"encoded {len(mu)} stamp(s) of {args.input} -> {out} ({vae.latent_dim} latents each)")
        return 0
    if cmd == "reconstruct":
        mu, _, peaks = _encode(vae, stamps, args.input)
        rec = decode_latents(vae, mu) * peaks[:, None, None]
        _write_fits(args.output, squeeze(rec), _model_cards(args.model, vae, cmd))
        print(f"reconstructed {len(rec)} stamp(s) of {args.input} -> {args.output}")
        return 0
    if cmd == "fit":
        try:
            sigma_arr: Any = float(args.sigma)
        except ValueError:
            sigma_arr = None
        if sigma_arr is not None and not sigma_arr > 0:
            raise CommandError(f"--sigma must be positive, got {args.sigma}")
        if sigma_arr is None:
            sig_path = Path(args.sigma)
            sigma_arr, _, _ = _read_stamps(sig_path, vae.image_size, args.resize)
            if sigma_arr.shape != stamps.shape:
                raise CommandError(f"sigma map '{sig_path}' has shape {sigma_arr.shape}, "
                                   f"the stamps {stamps.shape}")
            if not (sigma_arr > 0).all():
                raise CommandError(f"sigma map '{sig_path}' has non-positive values")
        peaks = _peaks(stamps, args.input)
        from .fit.decoder import fit_decoder

        res = fit_decoder(vae, stamps, sigma_arr, init=args.init, max_iter=args.max_iter,
                          prior_weight=args.prior_weight, encoder_input=stamps / peaks[:, None, None])
        model, z, flux, offset, scale, chi2, chi2_nu = (res.model, res.z, res.flux, res.offset, res.scale,
                                                        res.chi2, res.chi2_nu)
        table = fits.BinTableHDU.from_columns([
            fits.Column(name="z", format=f"{vae.latent_dim}D", array=np.asarray(z, dtype=np.float64)),
            fits.Column(name="flux", format="D", array=np.asarray(flux, dtype=np.float64)),
            fits.Column(name="dx", format="D", unit="pixel", array=np.asarray(offset)[:, 0]),
            fits.Column(name="dy", format="D", unit="pixel", array=np.asarray(offset)[:, 1]),
            fits.Column(name="scale", format="D", array=np.asarray(scale, dtype=np.float64)),
            fits.Column(name="chi2", format="D", array=np.asarray(chi2, dtype=np.float64)),
            fits.Column(name="chi2_nu", format="D", array=np.asarray(chi2_nu, dtype=np.float64)),
        ], name="FIT")
        extra = []
        if args.posterior is not None and args.samples < 2:
            raise CommandError(f"--samples must be at least 2 for a posterior, got {args.samples}")
        if args.posterior is not None:
            from .fit.posterior import decoder_posterior, parameters

            try:
                q = parameters(z, flux, offset, scale)
            except ValueError as err:
                raise CommandError(f"{args.input}: {err}") from err
            post = decoder_posterior(args.posterior, vae, stamps, sigma_arr, q, n_samples=args.samples,
                                     seed=args.seed, prior_weight=args.prior_weight)
            cols = [fits.Column(name="z_std", format=f"{vae.latent_dim}D", array=post.parameter_std[:, :vae.latent_dim]),
                    fits.Column(name="flux_std", format="D", array=np.asarray(flux) * post.parameter_std[:, vae.latent_dim]),
                    fits.Column(name="dx_std", format="D", unit="pixel", array=post.parameter_std[:, vae.latent_dim + 1]),
                    fits.Column(name="dy_std", format="D", unit="pixel", array=post.parameter_std[:, vae.latent_dim + 2])]
            table = fits.BinTableHDU.from_columns(table.columns + fits.ColDefs(cols), name="FIT")
            for name, arr in (("POSTERIOR_MEAN", post.model_mean), ("POSTERIOR_STD", post.model_std)):
                hdu = fits.ImageHDU(np.asarray(squeeze(arr), dtype=np.float32), name=name)
                hdu.header["METHOD"] = (args.posterior, "posterior: laplace or nuts")
                hdu.header["NSAMPLES"] = (args.samples, "draws per stamp")
                extra.append(hdu)
        _write_fits(args.output, squeeze(np.asarray(model)), _model_cards(args.model, vae, cmd), table, extra)
        note = f", posterior ({args.posterior}) mean and std in POSTERIOR_MEAN, POSTERIOR_STD" if extra else ""
        print(f"fitted {len(stamps)} stamp(s) of {args.input}: median chi2/nu {np.median(chi2_nu):.3g}{note} "
              f"-> {args.output}")
        return 0
    return 2


# --------------------------------------------------------------------------------------------
# sourcelens lens predict / sourcelens delens: study 002's networks on users' lensed images (FITS)
# --------------------------------------------------------------------------------------------
FITS_SUFFIXES = (".fits", ".fit", ".fts")
#: Units of the lens parameters (sourcelens.names.LENS_PARAMETERS); the others are dimensionless.
PARAM_UNITS = {"theta_E": "arcsec", "center_x": "arcsec", "center_y": "arcsec"}
LENSED_SIZE_HINT = ("the network takes images of its training size and pixel scale: cut them to that size "
                    "(resampling would change the pixel scale)")
LENSED_INPUT_HELP = "lensed image(s): FITS, one 2-D image or an N×H×W cube, H = W = the model's image size"


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_lens_parsers(sub) -> None:
    """``sourcelens lens predict`` and ``sourcelens delens``."""
    p_lens = sub.add_parser("lens", help="lens parameters (with 1σ uncertainties) of lensed images with a trained CNN",
                            description="Lensed images are FITS: one 2-D image or an N×H×W cube (the first HDU "
                                        "with data, or --hdu), of the network's size and pixel scale, any flux units.")
    lsub = p_lens.add_subparsers(dest="lens_command", required=True)
    p = lsub.add_parser("predict", help="table of the 8 lens parameters and their 1σ uncertainties per image",
                        description="Predict theta_E [arcsec], gamma, e1, e2, center_x, center_y [arcsec, from the "
                                    "image centre; x along columns, y along rows], gamma1, gamma2 and a 1σ "
                                    "uncertainty for each (columns <p>_sigma), one row per image.")
    p.add_argument("model", type=Path, help="lens-parameter CNN file (sourcelens.models.save_cnn)")
    p.add_argument("input", type=Path, help=LENSED_INPUT_HELP)
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="OUT.csv (units in a '#' header comment) or OUT.fits (binary table 'LENS_PARAMS', units "
                        "in TUNITn); default <input stem>_lens.csv beside the input")
    p.add_argument("--hdu", default=None, help="HDU (index or name) to read; default the first with data")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="images per network batch (default 256)")

    p = sub.add_parser("delens", help="unlensed sources of lensed images with a trained U-Net",
                       description="Delens FITS images (one 2-D image or an N×H×W cube, any flux units) with a "
                                   "trained U-Net: the output has the input's shape and holds peak-normalised "
                                   "sources on the network's source grid, centred on the optical axis (its pixel "
                                   "scale in CDELT1/2 and PIXSCALE [arcsec] when the model file records it).")
    p.add_argument("model", type=Path, help="U-Net file (sourcelens.models.save_unet)")
    p.add_argument("input", type=Path, help=LENSED_INPUT_HELP)
    p.add_argument("-o", "--output", type=Path, required=True, help="SOURCES.fits (an image, or an N×S×S cube)")
    p.add_argument("--hdu", default=None, help="HDU (index or name) to read; default the first with data")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="images per network batch (default 128)")
    p.add_argument("--single-pass", action="store_true",
                   help="one pass of the network per image instead of the mean over its 8 rotations and "
                        "reflections (8x faster, slightly less accurate)")


def _load_network(path: Path, loader: Callable[[Path], Any]) -> Any:
    """A model file read by ``loader`` (load_cnn, load_unet); any failure a CommandError naming the file."""
    if not path.is_file():
        raise CommandError(f"no such model file: {path}")
    try:
        return loader(path)
    except Exception as err:  # a damaged file fails in torch.load, the constructor or the weights
        message = " ".join(str(err).split())   # one line, however long torch's message
        if str(path) not in message:
            message = f"cannot load model '{path}' (damaged?): {_shorten(message)}"
        raise CommandError(message) from err


def _shorten(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_lens_output(args, suffixes: tuple[str, ...]) -> None:
    """Refuse, before any work, an output that is a directory, overwrites the input or has a wrong suffix."""
    _check_output(args.output, "out" + suffixes[0])
    if args.output.suffix.lower() not in suffixes:
        raise CommandError(f"output '{args.output}' must end in {' or '.join(suffixes)}")
    if args.output.resolve() == args.input.resolve():
        raise CommandError(f"output '{args.output}' is the input file; give another name")


def _lens_columns(mean: np.ndarray, sigma: np.ndarray) -> dict[str, np.ndarray]:
    """Table columns: index, then <p> and <p>_sigma for each lens parameter, in LENS_PARAMETERS order."""
    from .names import LENS_PARAMETERS

    columns = {"index": np.arange(len(mean), dtype=np.int64)}
    for i, name in enumerate(LENS_PARAMETERS):
        columns[name] = np.asarray(mean[:, i], dtype=np.float64)
        columns[name + "_sigma"] = np.asarray(sigma[:, i], dtype=np.float64)
    return columns


def _unit(column: str) -> str:
    return PARAM_UNITS.get(column.removesuffix("_sigma"), "")


def _lens_csv_comments(args) -> list[str]:
    """The header comment of a ``lens predict`` CSV: what the table is and the units."""
    from .names import LENS_PARAMETERS

    arcsec = ", ".join(p for p in LENS_PARAMETERS if p in PARAM_UNITS)
    plain = ", ".join(p for p in LENS_PARAMETERS if p not in PARAM_UNITS)
    return [f"sourcelens lens predict: model {args.model.name}, images {args.input.name}",
            f"units: {arcsec} in arcsec (centre from the image centre; x along columns, y along rows)",
            f"{plain}: dimensionless; <p>_sigma: 1-sigma uncertainty of <p>, same units; index: image in the cube"]


def _write_lens_csv(path: Path, columns: dict[str, np.ndarray], comments: list[str]) -> None:
    import pandas as pd

    from .io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.writelines(f"# {line}\n" for line in comments)
        pd.DataFrame(columns).to_csv(fh, index=False, float_format="%.9g")


def _write_lens_fits(path: Path, columns: dict[str, np.ndarray], args, image_size: int) -> None:
    from astropy.io import fits

    from .io import atomic_path

    table = fits.BinTableHDU.from_columns(
        [fits.Column(name=name, format="K" if name == "index" else "D", unit=_unit(name) or None, array=values)
         for name, values in columns.items()], name="LENS_PARAMS")
    primary = fits.PrimaryHDU()
    cards = {"CREATOR": "sourcelens lens predict", "CNNMODEL": (args.model.name[:60], "lens-parameter CNN file"),
             "INPUT": (args.input.name[:60], "lensed images"), "IMSIZE": (image_size, "model image size [pixels]")}
    for key, value in cards.items():
        primary.header[key] = value
    primary.header["COMMENT"] = "<p>_sigma: 1-sigma uncertainty of <p>; centre from the image centre, x along columns"
    with atomic_path(path) as tmp:
        fits.HDUList([primary, table]).writeto(tmp, overwrite=True)


def _run_lens_predict(args) -> int:
    """``sourcelens lens predict``: the lens-parameter table of a FITS image or cube."""
    from .models.cnn import load_cnn, predict_lens_params

    if args.output is None:
        args.output = args.input.with_name(args.input.stem + "_lens.csv")
    _check_lens_output(args, (".csv", *FITS_SUFFIXES))
    cnn = _load_network(args.model, load_cnn)
    size = cnn.hparams["image_size"]
    images, _, _ = _read_stamps(args.input, size, hdu=args.hdu, hint=LENSED_SIZE_HINT)
    columns = _lens_columns(*predict_lens_params(cnn, images, batch_size=args.batch_size))
    if args.output.suffix.lower() == ".csv":
        _write_lens_csv(args.output, columns, _lens_csv_comments(args))
    else:
        _write_lens_fits(args.output, columns, args, size)
    print(f"predicted lens parameters of {len(images)} image(s) of {args.input} -> {args.output}")
    return 0


def _delens_cards(args, unet) -> dict[str, Any]:
    """FITS header cards of ``delens`` output: what it is, the model, and the source grid when known."""
    size = unet.hparams["image_size"]
    cards: dict[str, Any] = {
        "CREATOR": "sourcelens delens", "UNETMODL": (args.model.name[:60], "U-Net file"),
        "INPUT": (args.input.name[:60], "lensed images"),
        "CONTENT": ("delensed source", "U-Net estimate of the unlensed source"),
        "SRCNORM": ("peak", "peak-normalised: scaled to unit peak"),
        "GRIDCEN": ("optical axis", "grid centred on the optical axis, x = y = 0"),
        "DIHEDRAL": (not args.single_pass, "mean over the 8 rotations/reflections of the input"),
    }
    scale = ((getattr(unet, "extra", None) or {}).get("source_grid") or {}).get("pixel_scale_arcsec")
    return cards | _grid_cards(size, scale, "source-grid")


def _grid_cards(size: int, scale: Any, grid: str) -> dict[str, Any]:
    """FITS cards of a centred grid of ``size`` pixels of ``scale`` arcsec (``grid``: its name for the comments):
    CRPIXn at the centre (the optical axis), CRVALn 0, CDELTn, CUNITn and PIXSCALE; {} when the scale is unknown."""
    if not (isinstance(scale, (int, float)) and scale > 0):
        return {}
    cards: dict[str, Any] = {}
    for axis in (1, 2):
        cards[f"CRPIX{axis}"] = ((size + 1) / 2, "optical axis (1-based pixel)")
        cards[f"CRVAL{axis}"] = (0.0, "arcsec")
        cards[f"CDELT{axis}"] = (float(scale), f"{grid} pixel scale [arcsec]")
        cards[f"CUNIT{axis}"] = "arcsec"
    cards["PIXSCALE"] = (float(scale), f"{grid} pixel scale [arcsec]")
    return cards


def _run_delens(args) -> int:
    """``sourcelens delens``: U-Net sources of a FITS image or cube, same shape as the input."""
    from .models.unet import delens, load_unet

    _check_lens_output(args, FITS_SUFFIXES)
    unet = _load_network(args.model, load_unet)
    images, single, _ = _read_stamps(args.input, unet.hparams["image_size"], hdu=args.hdu, hint=LENSED_SIZE_HINT)
    sources = delens(unet, images, batch_size=args.batch_size, dihedral=not args.single_pass)
    _write_fits(args.output, sources[0] if single else sources, _delens_cards(args, unet))
    print(f"delensed {len(sources)} image(s) of {args.input} -> {args.output}")
    return 0


# --------------------------------------------------------------------------------------------
# sourcelens super-resolve: studies 001 and 004's networks on users' lensed images (FITS)
# --------------------------------------------------------------------------------------------
#: The lens parameters of a lens file per lens model (those of sourcelens.simulate.lens_kwargs); centres default 0.
LENS_FILE_KEYS = {"SIS": ("theta_E", "center_x", "center_y"), "SIE": ("theta_E", "e1", "e2", "center_x", "center_y"),
                  "EPL": ("theta_E", "gamma", "e1", "e2", "center_x", "center_y")}
LENS_FILE_SHEAR = ("gamma1", "gamma2")
SR_SIZE_HINT = ("the network takes images of its training size and pixel scale: cut them to that size "
                "(resampling would change the pixel scale)")


def _add_super_resolve_parser(sub) -> None:
    p = sub.add_parser(
        "super-resolve", help="super-resolve lensed images (bicubic, SISR, LensSR, PISR)",
        description="Super-resolve FITS images (one 2-D image or an N×n×n cube, flux per pixel in any units) by "
                    "the factor of a trained network (sourcelens.models.save_sisr, save_lenssr, save_pisr: the file "
                    "says which method it is) or by bicubic upsampling (--method bicubic, no model needed). The "
                    "output holds the super-resolved images (f·n × f·n, flux per high-resolution pixel, same units; "
                    "pixel scale in CDELT1/2 and PIXSCALE [arcsec] when known) and, for methods that yield a "
                    "source (PISR; LensSR without source when given a lens), the source on the high-resolution "
                    "source grid centred on the optical axis in the HDU 'SOURCE'. PISR needs the lens (--lens); "
                    "bicubic, supervised SISR and LensSR with source need none.")
    p.add_argument("model", type=Path, nargs="?", default=None,
                   help="super-resolution model file (optional with --method bicubic)")
    p.add_argument("input", type=Path, help="lensed image(s): FITS, one 2-D image or an N×n×n cube, n = the model's "
                                            "low-resolution size")
    p.add_argument("--lens", type=Path, default=None,
                   help="YAML lens file: lenstronomy-style keyword parameters, 'lens_model' (SIS, SIE, EPL) and "
                        "theta_E [arcsec], e1, e2, gamma, center_x, center_y [arcsec, from the image centre; "
                        "default 0], optional external shear gamma1, gamma2; one mapping for every image or a "
                        "list of one per image")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="OUT.fits: super-resolved image or N×fn×fn cube (and an HDU 'SOURCE')")
    p.add_argument("--method", choices=tuple(SR_LENS_USE), default=None,
                   help="bicubic: bicubic upsampling (no model needed; with a model, on its grid); another "
                        "method: check that the model file is of that method")
    p.add_argument("--factor", type=_positive_int, default=None,
                   help="upsampling factor of --method bicubic without a model (default 2)")
    p.add_argument("--pixel-scale", type=float, default=None,
                   help="input pixel scale [arcsec], where the model file records none (or for bicubic)")
    p.add_argument("--hdu", default=None, help="HDU (index or name) to read; default the first with data")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per network batch (default 16)")
    p.add_argument("--noise-sigma", default=None, metavar="SIGMA",
                   help="the images' noise per pixel (a number, input units, or a FITS map or cube shaped like the "
                        "input; 0 for noiseless images), as the pipeline's evaluation uses it: PISR refines its "
                        "sources on the data to this noise level, and the super-resolved images are moved onto "
                        "their data to it (sourcelens.lensing.data_consistency) where the model's training images "
                        "were binned (each pixel the sum of its high-resolution sub-pixels; not Model_I's "
                        "point-sampled ones)")


def _noise_sigma(args, images: np.ndarray) -> np.ndarray | float | None:
    """The noise of ``--noise-sigma`` (a number or a FITS map/cube shaped like the images), or None."""
    if args.noise_sigma is None:
        return None
    try:
        sigma: np.ndarray | float = float(args.noise_sigma)
    except ValueError:
        path = Path(args.noise_sigma)
        if not path.is_file():
            raise CommandError(f"--noise-sigma {args.noise_sigma!r}: neither a number nor a FITS file") from None
        data, _ = _read_fits_array(path, None)
        sigma = np.asarray(data, dtype=float)
        if sigma.shape not in (images.shape[1:], images.shape):
            raise CommandError(f"--noise-sigma '{path}': shape {sigma.shape} does not match the images "
                               f"{images.shape if len(images) > 1 else images.shape[1:]}")
    if not np.all(np.isfinite(sigma)) or np.any(np.asarray(sigma) < 0):
        raise CommandError(f"--noise-sigma {args.noise_sigma!r}: the noise must be finite and ≥ 0")
    return sigma


def _load_sr_model(path: Path):
    """A super-resolution model file and its method (:func:`sourcelens.models.sr.load_sr_model`); errors name
    the file."""
    from .models.sr import load_sr_model

    return _load_network(path, load_sr_model)


def _sr_grid(args, model) -> dict[str, Any]:
    """The geometry of the run: ``factor``, ``num_pix`` (None: any size), ``pixel_scale`` (None: unknown) and
    ``psf`` (a config PSF description or None), from the model file's ``grid`` record, --factor, --pixel-scale."""
    grid = dict((getattr(model, "extra", None) or {}).get("grid") or {}) if model is not None else {}
    factor = int(model.hparams["factor"]) if model is not None else (args.factor or 2)
    if model is not None and args.factor is not None and args.factor != factor:
        raise CommandError(f"--factor {args.factor}: the model '{args.model}' super-resolves by {factor}")
    scale = grid.get("low_res_pixel_scale_arcsec")
    if args.pixel_scale is not None:
        if not args.pixel_scale > 0:
            raise CommandError(f"--pixel-scale must be positive, got {args.pixel_scale}")
        if scale is not None and not np.isclose(args.pixel_scale, float(scale), rtol=1e-6):
            raise CommandError(f"--pixel-scale {args.pixel_scale}: the model '{args.model}' was trained on "
                               f"{float(scale):g}\" pixels; the images must have its pixel scale")
        scale = args.pixel_scale
    num_pix = grid.get("low_res_num_pix")
    return {"factor": factor, "num_pix": None if num_pix is None else int(num_pix),
            "pixel_scale": None if scale is None else float(scale), "psf": grid.get("psf"),
            "supersampling": grid.get("supersampling"), "low_res_supersampling": grid.get("low_res_supersampling")}


def _lens_number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise CommandError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _parse_lens(entry: Any, where: str) -> tuple[list[str], list[dict[str, float]]]:
    """One lens of a lens file (a mapping, ``where`` names it for messages) as lenstronomy lists."""
    from .names import LENS_PARAMETERS
    from .simulate import lens_kwargs

    if not isinstance(entry, dict):
        raise CommandError(f"{where}: expected a mapping of lens parameters (lens_model, theta_E, ...), got "
                           f"{type(entry).__name__}")
    model = entry.get("lens_model")
    if model is None:
        raise CommandError(f"{where}: no 'lens_model' key (one of {', '.join(LENS_FILE_KEYS)})")
    if model not in LENS_FILE_KEYS:
        raise CommandError(f"{where}: lens_model {model!r} is not one of {', '.join(LENS_FILE_KEYS)}")
    keys = LENS_FILE_KEYS[model]
    allowed = ("lens_model", *keys, *LENS_FILE_SHEAR)
    for key in entry:
        if key not in allowed:
            raise CommandError(f"{where}: unknown key '{key}' for a {model} lens; expected "
                               f"{', '.join(allowed[1:])}")
    for key in keys:
        if key not in entry and not key.startswith("center"):
            raise CommandError(f"{where}: a {model} lens needs '{key}'")
    params = {k: _lens_number(entry[k], k, where) for k in allowed[1:] if k in entry}
    if params["theta_E"] < 0:
        raise CommandError(f"{where}: 'theta_E' must be ≥ 0 arcsec, got {params['theta_E']}")
    shear = [k for k in LENS_FILE_SHEAR if k in params]
    if len(shear) == 1:
        raise CommandError(f"{where}: external shear needs both 'gamma1' and 'gamma2', got only '{shear[0]}'")
    params = dict.fromkeys(LENS_PARAMETERS, 0.0) | params
    return lens_kwargs(model, params, with_shear=bool(shear))


def _read_lens_file(path: Path, n_images: int) -> list[tuple[list[str], list[dict[str, float]]]]:
    """One lens per image (lenstronomy lists) from a YAML lens file: one mapping for all images, or a list of
    one mapping per image (or of one for all); errors name the file, the lens and the key."""
    import yaml

    if path.is_dir():
        raise CommandError(f"lens file '{path}' is a directory")
    if not path.is_file():
        raise CommandError(f"no such lens file: {path}")
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CommandError(f"cannot read lens file '{path}': {_shorten(' '.join(str(err).split()))}") from err
    if isinstance(content, dict):
        return [_parse_lens(content, f"lens file '{path}'")] * n_images
    if not isinstance(content, list) or not content:
        raise CommandError(f"lens file '{path}': expected a mapping of lens parameters or a non-empty list of them "
                           f"(one per image), got {type(content).__name__}")
    lenses = [_parse_lens(entry, f"lens file '{path}', lens {i}") for i, entry in enumerate(content)]
    if len(lenses) == 1:
        return lenses * n_images
    if len(lenses) != n_images:
        raise CommandError(f"lens file '{path}' has {len(lenses)} lenses for {n_images} images; give one lens for "
                           "all images or one per image")
    return lenses


def _sr_lenses(args, method: str, grid: dict[str, Any], n_images: int):
    """The :class:`SRLens` of each image (None when the method uses none or no lens file is given), each
    distinct lens built once (:class:`SRLensCache`)."""
    use = SR_LENS_USE[method]
    if args.lens is None:
        if use == "needed":
            raise CommandError(f"the {method} model '{args.model}' needs the lens of the images: give --lens "
                               "lens.yaml (lens_model, theta_E, ...)")
        return None
    lenses = _read_lens_file(args.lens, n_images)
    if use == "unused":
        print(f"note: {method} does not use a lens; --lens {args.lens} ignored")
        return None
    if grid["pixel_scale"] is None:
        raise CommandError(f"the model '{args.model}' records no pixel scale; give the images' --pixel-scale")
    from .lensing.superres import SRGeometry, SRLensCache

    try:
        geometry = SRGeometry.from_attrs({"low_res_num_pix": grid["num_pix"], "factor": grid["factor"],
                                          "low_res_pixel_scale_arcsec": grid["pixel_scale"], "psf": grid["psf"],
                                          "supersampling": grid.get("supersampling"),
                                          "low_res_supersampling": grid.get("low_res_supersampling")})
    except (KeyError, TypeError, ValueError) as err:
        raise CommandError(f"model '{args.model}': its grid record {grid} is not usable ({err})") from err
    cache = SRLensCache(geometry)
    return [cache.get(models, kwargs) for models, kwargs in lenses]


def _run_super_resolve(args) -> int:
    """``sourcelens super-resolve``: super-resolved images (and sources) of a FITS image or cube."""
    from .lensing.superres import low_res_is_binned
    from .models.sr import run_super_resolution

    _check_lens_output(args, FITS_SUFFIXES)
    if args.model is None and args.method != "bicubic":
        raise CommandError("give a super-resolution model file, or --method bicubic")
    model, method = _load_sr_model(args.model) if args.model is not None else (None, "bicubic")
    if args.method is not None and args.method not in ("bicubic", method):
        raise CommandError(f"'{args.model}' is a {method} model, not {args.method}")
    method = args.method or method
    grid = _sr_grid(args, model)
    images, single, _ = _read_stamps(args.input, grid["num_pix"], hdu=args.hdu, hint=SR_SIZE_HINT)
    grid["num_pix"] = images.shape[1]
    lenses = _sr_lenses(args, method, grid, len(images))
    sigma = _noise_sigma(args, images)
    grid["consistent"] = sigma is not None and low_res_is_binned(grid["factor"], grid.get("supersampling"),
                                                                 grid.get("low_res_supersampling"))
    out, sources = run_super_resolution(method, model, images, lenses, factor=grid["factor"],
                                        batch_size=args.batch_size, noise_sigma=sigma,
                                        data_consistency=grid["consistent"])
    _write_fits(args.output, out[0] if single else out, _sr_cards(args, method, grid, out.shape[-1]),
                None if sources is None else _source_hdu(sources[0] if single else sources, grid))
    extra = " and their sources (HDU SOURCE)" if sources is not None else ""
    print(f"super-resolved {len(out)} image(s) of {args.input} ×{grid['factor']} by {method}{extra} -> {args.output}")
    return 0


def _sr_cards(args, method: str, grid: dict[str, Any], size: int) -> dict[str, Any]:
    """FITS header cards of ``super-resolve`` output: what it is, the method, the model and the grid."""
    scale = None if grid["pixel_scale"] is None else grid["pixel_scale"] / grid["factor"]
    cards: dict[str, Any] = {
        "CREATOR": "sourcelens super-resolve", "SRMETHOD": (method, "super-resolution method"),
        "INPUT": (args.input.name[:60], "low-resolution images"),
        "CONTENT": ("super-resolved image", "flux per high-resolution pixel, input units"),
        "SRFACTOR": (grid["factor"], "upsampling factor"),
    }
    if args.model is not None:
        cards["SRMODEL"] = (args.model.name[:60], "super-resolution model file")
    if args.lens is not None and SR_LENS_USE[method] != "unused":
        cards["LENSFILE"] = (args.lens.name[:60], "lens parameters")
    if grid["pixel_scale"] is not None:
        cards["LRSCALE"] = (grid["pixel_scale"], "input pixel scale [arcsec]")
    cards["DATACONS"] = (bool(grid.get("consistent")), "moved onto the data to its noise level")
    if args.noise_sigma is not None and method == "pisr":
        cards["SRREFINE"] = (True, "PISR sources refined on the data to its noise")
    return cards | _grid_cards(size, scale, "high-resolution")


def _source_hdu(sources: np.ndarray, grid: dict[str, Any]):
    """The HDU 'SOURCE': sources on the high-resolution source grid (centred on the optical axis)."""
    from astropy.io import fits

    hdu = fits.ImageHDU(np.asarray(sources, dtype=np.float32), name="SOURCE")
    hdu.header["CONTENT"] = ("source", "unlensed source, flux per cell, input units")
    scale = None if grid["pixel_scale"] is None else grid["pixel_scale"] / grid["factor"]
    for key, value in _grid_cards(sources.shape[-1], scale, "source-grid").items():
        hdu.header[key] = value
    return hdu


# --------------------------------------------------------------------------------------------
# sourcelens deblend: study 003's latent-space deblender on users' multi-band blends (FITS)
# --------------------------------------------------------------------------------------------
DEBLEND_SIZE_HINT = ("the deblender takes stamps of its training size and grid pixel scale: cut them to that size "
                     "(resampling would change the pixel scale)")


def _add_deblend_parser(sub) -> None:
    p = sub.add_parser(
        "deblend", help="the central galaxy of multi-band blends with a trained deblender (study 003)",
        description="Deblend FITS multi-band cubes with a trained latent-space deblender (sourcelens.models."
                    "save_deblender): one blend (B×H×W) or many (N×B×H×W), the B bands in the model's band order "
                    "(recorded in the model file, e.g. u g r i z y [IE YE JE HE]), H = W = the model's stamp size, "
                    "counts per pixel as in the blend files (electrons per grid pixel, sky-subtracted). The output "
                    "holds the deblended central galaxy, shaped like the input and in its units; the bands, the "
                    "model and its normalisation scales are in the header.")
    p.add_argument("model", type=Path, help="deblender file (sourcelens.models.save_deblender, e.g. "
                                            "results/models/deblend/deblender_lsst.pt)")
    p.add_argument("input", type=Path, help="blend(s): FITS, a B×H×W cube (one blend) or an N×B×H×W cube, bands in "
                                            "the model's order")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="CENTRAL.fits: the central galaxy, shaped like the input (B×H×W or N×B×H×W), same units")
    p.add_argument("--hdu", default=None, help="HDU (index or name) to read; default the first with data")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="blends per network batch (default 128)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the network runs (default auto: CUDA when present, else the CPU)")


def _deblender_normalisation(path: Path, model) -> tuple[list[str], list[float]]:
    """The bands and normalisation scales I_b a deblender file records; an error naming the file when it has
    none or they do not fit the network."""
    from .models.deblender import normalisation_of

    try:
        norm = normalisation_of(model)
    except ValueError as err:
        raise CommandError(f"model '{path}': {err}") from err
    bands, scales = [str(b) for b in norm.get("bands") or []], [float(s) for s in norm["scales"]]
    n = int(model.hparams["bands"])
    if len(scales) != n or (bands and len(bands) != n):
        raise CommandError(f"model '{path}' is inconsistent: a {n}-band network with {len(bands)} band names and "
                           f"{len(scales)} normalisation scales")
    if not all(np.isfinite(scales)) or min(scales) <= 0:
        raise CommandError(f"model '{path}': its normalisation scales {scales} must be positive")
    return bands or [f"band{i}" for i in range(n)], scales


def _read_blends(path: Path, bands: list[str], size: int, hdu: str | None) -> tuple[np.ndarray, bool, Any]:
    """Blends (N, B, size, size) float64 from a FITS B×H×W or N×B×H×W cube, whether it held one blend, and its
    header."""
    data, header = _read_fits_array(path, hdu)
    n_bands = len(bands)
    order = " ".join(bands)
    if data.ndim not in (3, 4):
        raise CommandError(f"'{path}': expected a {n_bands}×H×W cube (one blend) or an N×{n_bands}×H×W cube, "
                           f"got shape {data.shape}")
    single = data.ndim == 3
    cube = data[None] if single else data
    if cube.shape[1] != n_bands:
        raise CommandError(f"'{path}': {cube.shape[1]} bands (shape {data.shape}) but the model takes {n_bands} "
                           f"({order}, in that order)")
    recorded = header.get("BANDS")
    if isinstance(recorded, str) and [b for b in recorded.replace(",", " ").split()] != bands:
        raise CommandError(f"'{path}': its header says BANDS = '{recorded}', the model takes {order}, in that order")
    if cube.shape[2:] != (size, size):
        raise CommandError(f"'{path}': stamps are {cube.shape[2]}×{cube.shape[3]} but the model takes "
                           f"{size}×{size}; {DEBLEND_SIZE_HINT}")
    bad = ~np.isfinite(cube).all(axis=(1, 2, 3))
    if bad.any():
        which = np.flatnonzero(bad)
        where = "" if single else f" (blends {', '.join(map(str, which[:10]))}{' ...' if len(which) > 10 else ''})"
        raise CommandError(f"'{path}' contains NaN or infinite pixels{where}; mask or fill them first")
    return cube, single, header


def _torch_device(name: str):
    """The torch device of ``--device``; an error when CUDA is asked for and there is none."""
    import torch

    from .models.common import best_device

    if name == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return best_device(name)


def _deblend_cards(args, model, bands: list[str], scales: list[float], device, unit: Any = None) -> dict[str, Any]:
    """FITS header cards of ``deblend`` output: what it is, the bands in axis order, the model, its normalisation
    and provenance."""
    from . import __version__
    from .blends import NORMALISATION_BETA

    prov = getattr(model, "provenance", None) or {}
    training = (getattr(model, "extra", None) or {}).get("training") or {}
    band_set = training.get("band_set") or prov.get("bands")
    cards: dict[str, Any] = {
        "CREATOR": (f"sourcelens deblend {__version__}"[:68], "program"),
        "CONTENT": ("deblended central galaxy", "deblender estimate, noiseless"),
        "UNITS": ("as input", "counts per pixel, the input blends' units"),
        "DBMODEL": (args.model.name[:60], "deblender file"),
        "INPUT": (args.input.name[:60], "blends"),
        "BANDS": (",".join(bands)[:68], "band of each plane, in axis order"),
        "NBANDS": (len(bands), "bands"),
        "IMSIZE": (int(model.hparams["image_size"]), "model stamp size [pixels]"),
        "LATDIM": (int(model.hparams["latent_dim"]), "latent dimension"),
        "NORMBETA": (NORMALISATION_BETA, "normalisation tanh(arcsinh(x / (I_b / beta)))"),
    }
    if band_set:
        cards["BANDSET"] = (str(band_set)[:60], "band set the model was trained on")
    for i, (band, scale) in enumerate(zip(bands, scales), start=1):
        cards[f"BAND{i}"] = (band[:60], f"band of plane {i}")
        cards[f"NORMSC{i}"] = (float(scale), f"normalisation scale I_b of band {band}")
    if prov.get("git_commit"):
        cards["MODLGIT"] = (str(prov["git_commit"])[:60], "git commit of the model's training")
    if prov.get("rule"):
        cards["MODLRULE"] = (str(prov["rule"])[:60], "workflow rule that trained the model")
    cards["DEVICE"] = (str(device.type), "where the network ran")
    if isinstance(unit, str) and unit.strip():
        cards["BUNIT"] = (unit[:60], "the input's units")
    return cards


def _run_deblend(args) -> int:
    """``sourcelens deblend``: the central galaxy of each multi-band blend of a FITS cube, same shape and units."""
    from .models.deblender import deblend_images, load_deblender

    _check_lens_output(args, FITS_SUFFIXES)
    device = _torch_device(args.device)
    model = _load_network(args.model, load_deblender)
    bands, scales = _deblender_normalisation(args.model, model)
    blends, single, header = _read_blends(args.input, bands, int(model.hparams["image_size"]), args.hdu)
    central = deblend_images(model, blends, batch_size=args.batch_size, device=device)
    _write_fits(args.output, central[0] if single else central,
                _deblend_cards(args, model, bands, scales, device, header.get("BUNIT")))
    print(f"deblended {len(central)} blend(s) of {args.input} ({' '.join(bands)}) -> {args.output}")
    return 0


def _run_info(args) -> int:
    """``sourcelens info``: describe each file; 1 if any is missing or unreadable."""
    from .io import DatasetError

    status = 0
    for path in args.files:
        if not path.exists():
            print(f"sourcelens info: no such file: {path}", file=sys.stderr)
            status = 1
            continue
        try:
            print(_describe(path, args.rows))
        except DatasetError as err:  # names the file itself
            print(f"sourcelens info: {err}", file=sys.stderr)
            status = 1
        except (OSError, ValueError) as err:
            print(f"sourcelens info: {path}: {err}", file=sys.stderr)
            status = 1
    return status


def _run_check_config(args) -> int:
    """``sourcelens check-config``: validate the merged config files."""
    from .config import ConfigError, load_config

    try:
        load_config(*args.files)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    print("config OK: " + ", ".join(map(str, args.files)))
    return 0


def _checkpoint_dirs(dirs: list[Path]) -> list[Path]:
    """The folders to clean: those given, else those matching :data:`DEFAULT_CHECKPOINTS`."""
    if dirs:
        return list(dirs)
    return sorted(p for p in Path().glob(DEFAULT_CHECKPOINTS) if p.is_dir())


def _clean_one(path: Path) -> None:
    """Remove one checkpoint folder (sourcelens.train.clean_checkpoints) and say what went."""
    # imported here: the CLI's other commands never need the training code
    from .train import clean_checkpoints

    existed = path.exists()
    removed = clean_checkpoints(path)
    if not existed:
        print(f"{path}: no such folder, nothing removed")
        return
    print(f"removed {path} ({len(removed)} file{'s' if len(removed) != 1 else ''})")
    for item in removed:
        print(f"  {item}")


def _run_clean_checkpoints(args) -> int:
    """``sourcelens clean-checkpoints``: remove training checkpoint folders; 1 if any was refused."""
    dirs = _checkpoint_dirs(args.dirs)
    if not dirs:
        print(f"no checkpoint folders match {DEFAULT_CHECKPOINTS}: nothing removed")
        return 0
    status = 0
    for path in dirs:
        try:
            _clean_one(path)
        except (OSError, ValueError) as err:
            print(f"sourcelens clean-checkpoints: {err}", file=sys.stderr)
            status = 1
    return status


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sourcelens", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="summarise a sourcelens output file")
    p_info.add_argument("files", nargs="+", type=Path)
    p_info.add_argument("--rows", type=int, default=5, help="metadata rows to show")
    p_check = sub.add_parser("check-config", help="check config files (merged in order) as the workflow does: "
                                                  "the schema and the rules across keys")
    p_check.add_argument("files", nargs="+", type=Path)
    p_clean = sub.add_parser("clean-checkpoints", help="remove training checkpoint folders (the training caches)")
    p_clean.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                         help=f"checkpoint folders (with a progress.json); default {DEFAULT_CHECKPOINTS}")
    _add_vae_parser(sub)
    _add_lens_parsers(sub)
    _add_super_resolve_parser(sub)
    _add_deblend_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "info":
        return _run_info(args)
    if args.command == "check-config":
        return _run_check_config(args)
    if args.command == "clean-checkpoints":
        return _run_clean_checkpoints(args)
    if args.command == "vae":
        return _run_reporting(_run_vae, args, f"vae {args.vae_command}")
    if args.command == "lens":
        return _run_reporting(_run_lens_predict, args, f"lens {args.lens_command}")
    if args.command == "delens":
        return _run_reporting(_run_delens, args, "delens")
    if args.command == "super-resolve":
        return _run_reporting(_run_super_resolve, args, "super-resolve")
    if args.command == "deblend":
        return _run_reporting(_run_deblend, args, "deblend")
    return 2


def _run_reporting(run: Callable[[Any], int], args, name: str) -> int:
    """``run(args)``, a :class:`CommandError` printed as one line ``sourcelens NAME: message`` and status 1."""
    try:
        return run(args)
    except CommandError as err:
        print(f"sourcelens {name}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
