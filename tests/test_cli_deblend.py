"""`sourcelens deblend` on FITS multi-band blends (one B×H×W blend or an N×B×H×W cube), and its input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.io import fits

from sourcelens.cli import main
from sourcelens.models.deblender import (
    BandVAE,
    Deblender,
    deblend_images,
    load_deblender,
    save_band_vae,
    save_deblender,
)

SIZE = 16
BANDS = ["u", "g", "r", "i", "z", "y"]
SCALES = [40.0, 150.0, 300.0, 400.0, 350.0, 250.0]
ARCH = {"bands": len(BANDS), "image_size": SIZE, "widths": (4, 8), "latent_dim": 4, "hidden_dim": 16}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An untrained 6-band deblender (with bands, scales and provenance), one without a normalisation, a
    multi-band VAE (a model of another kind) and a U-Net (another network altogether)."""
    from sourcelens.models import UNet, save_unet

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    norm = {"bands": BANDS, "scales": SCALES}
    save_deblender(Deblender(**ARCH), folder / "deblender.pt", norm,
                   provenance={"git_commit": "abc1234", "rule": "train_deblender", "bands": "lsst"},
                   extra={"training": {"band_set": "lsst"}})
    save_deblender(Deblender(**ARCH), folder / "no_norm.pt")
    save_band_vae(BandVAE(**ARCH), folder / "vae.pt", norm)
    save_unet(UNet(image_size=SIZE, widths=[4, 8]), folder / "unet.pt")
    return folder


def _blend(seed: int = 0, bands: int = len(BANDS), size: int = SIZE) -> np.ndarray:
    """A two-galaxy blend (bands, size, size) in counts, with sky-subtracted Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size)) - (size - 1) / 2
    central = np.exp(-(xx**2 + yy**2) / (2 * 2.0**2))
    neighbour = np.exp(-((xx - 4) ** 2 + (yy + 3) ** 2) / (2 * 1.5**2))
    flux = rng.uniform(50, 300, (bands, 2))
    img = flux[:, :1, None] * central + flux[:, 1:, None] * neighbour
    return img + rng.normal(0, 5.0, img.shape)


def _cube(n: int = 3) -> np.ndarray:
    return np.stack([_blend(seed=i) for i in range(n)])


def _write(path, data, **cards):
    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.float32))
    for key, value in cards.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


def _run(capsys, *argv) -> tuple[int, str]:
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def test_deblend_cube_and_single_blend(tmp_path, models, capsys):
    cube = _write(tmp_path / "cube.fits", _cube(), BUNIT="electron")
    one = _write(tmp_path / "one.fits", _blend(seed=7))
    model = load_deblender(models / "deblender.pt")

    status, _ = _run(capsys, "deblend", models / "deblender.pt", cube, "-o", tmp_path / "central.fits",
                     "--batch-size", "2", "--device", "cpu")
    assert status == 0
    with fits.open(tmp_path / "central.fits") as hdul:
        out, header = hdul[0].data, hdul[0].header
    assert out.shape == (3, len(BANDS), SIZE, SIZE) and out.dtype.kind == "f" and out.dtype.itemsize == 4
    expected = deblend_images(model, fits.getdata(cube).astype(np.float64), device=torch.device("cpu"))
    assert np.allclose(out, expected, rtol=1e-5, atol=1e-4)
    assert np.isfinite(out).all()
    # the output is in counts (denormalised with the model's scales), not in the [0, 1) normalisation
    assert out.max() > 1.0
    assert header["CONTENT"] == "deblended central galaxy" and header["DBMODEL"] == "deblender.pt"
    assert header["INPUT"] == "cube.fits" and header["BANDS"] == ",".join(BANDS) and header["NBANDS"] == 6
    assert [header[f"BAND{i + 1}"] for i in range(6)] == BANDS
    assert [header[f"NORMSC{i + 1}"] for i in range(6)] == SCALES
    assert header["BANDSET"] == "lsst" and header["MODLGIT"] == "abc1234" and header["MODLRULE"] == "train_deblender"
    assert header["BUNIT"] == "electron" and header["DEVICE"] == "cpu" and header["IMSIZE"] == SIZE
    assert header["CREATOR"].startswith("sourcelens deblend")

    assert _run(capsys, "deblend", models / "deblender.pt", one, "-o", tmp_path / "c1.fits")[0] == 0
    single = fits.getdata(tmp_path / "c1.fits")
    assert single.shape == (len(BANDS), SIZE, SIZE)
    assert np.allclose(single, deblend_images(model, fits.getdata(one)[None].astype(np.float64),
                                              device=torch.device("cpu"))[0], rtol=1e-5, atol=1e-4)
    assert "BUNIT" not in fits.getheader(tmp_path / "c1.fits")
    assert not list(tmp_path.glob(".*part"))


def test_deblend_hdu_and_band_header(tmp_path, models, capsys):
    path = tmp_path / "sci.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.float32(_cube(2)), name="SCI")]).writeto(path)
    assert _run(capsys, "deblend", models / "deblender.pt", path, "--hdu", "SCI", "-o", tmp_path / "a.fits")[0] == 0
    assert fits.getdata(tmp_path / "a.fits").shape == (2, len(BANDS), SIZE, SIZE)
    # a cube whose header names its bands in the model's order is taken; in another order, refused
    good = _write(tmp_path / "good.fits", _blend(), BANDS="u,g,r,i,z,y")
    assert _run(capsys, "deblend", models / "deblender.pt", good, "-o", tmp_path / "b.fits")[0] == 0
    swapped = _write(tmp_path / "swapped.fits", _blend(), BANDS="g,u,r,i,z,y")
    status, err = _run(capsys, "deblend", models / "deblender.pt", swapped, "-o", tmp_path / "c.fits")
    assert status == 1 and f"'{swapped}': its header says BANDS = 'g,u,r,i,z,y'" in err, err
    assert not (tmp_path / "c.fits").exists()


def _bad_inputs(tmp_path, models) -> dict[str, tuple]:
    """Bad cases: (model, blends, the text the message must contain) by name."""
    bands5 = _write(tmp_path / "bands5.fits", _blend(bands=5))
    bands5_cube = _write(tmp_path / "bands5_cube.fits", np.stack([_blend(bands=5)] * 2))
    big = _write(tmp_path / "big.fits", _blend(size=2 * SIZE))
    flat = _write(tmp_path / "flat.fits", _blend()[0])
    holes = _cube()
    holes[1, 2, 3, 4] = np.nan
    holes = _write(tmp_path / "holes.fits", holes)
    hole1 = _blend()
    hole1[0, 0, 0] = np.inf
    hole1 = _write(tmp_path / "hole1.fits", hole1)
    (text := tmp_path / "notes.fits").write_text("not a FITS file\n" * 20)
    _write(tmp_path / "full.fits", _cube())
    (cut := tmp_path / "cut.fits").write_bytes((tmp_path / "full.fits").read_bytes()[:3000])
    good = _write(tmp_path / "good.fits", _blend())
    (junk := tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    (half := tmp_path / "half.pt").write_bytes((models / "deblender.pt").read_bytes()[:2000])
    return {
        "bands": (None, bands5, (f"'{bands5}': 5 bands (shape (5, {SIZE}, {SIZE})) but the model takes 6 "
                                 "(u g r i z y, in that order)")),
        "bands cube": (None, bands5_cube, f"'{bands5_cube}': 5 bands"),
        "size": (None, big, f"'{big}': stamps are {2 * SIZE}×{2 * SIZE} but the model takes {SIZE}×{SIZE}"),
        "2-D": (None, flat, f"'{flat}': expected a 6×H×W cube (one blend) or an N×6×H×W cube, got shape"),
        "nan": (None, holes, f"'{holes}' contains NaN or infinite pixels (blends 1)"),
        "inf single": (None, hole1, f"'{hole1}' contains NaN or infinite pixels;"),
        "not fits": (None, text, f"cannot read FITS file '{text}'"),
        "truncated fits": (None, cut, f"cannot read FITS file '{cut}'"),
        "missing blends": (None, tmp_path / "none.fits", f"no such file: {tmp_path / 'none.fits'}"),
        "vae model": (models / "vae.pt", good, f"'{models / 'vae.pt'}' is not a sourcelens deblender model file"),
        "unet model": (models / "unet.pt", good, f"'{models / 'unet.pt'}' is not a sourcelens deblender model file"),
        "no normalisation": (models / "no_norm.pt", good,
                             f"model '{models / 'no_norm.pt'}': this model carries no normalisation scales"),
        "damaged model": (junk, good, f"'{junk}' could not be read as a model file"),
        "truncated model": (half, good, f"'{half}' could not be read as a model file"),
        "missing model": (tmp_path / "none.pt", good, f"no such model file: {tmp_path / 'none.pt'}"),
    }


@pytest.mark.parametrize("case", ["bands", "bands cube", "size", "2-D", "nan", "inf single", "not fits",
                                  "truncated fits", "missing blends", "vae model", "unet model", "no normalisation",
                                  "damaged model", "truncated model", "missing model"])
def test_bad_inputs(tmp_path, models, capsys, case):
    """Each bad input stops with one line naming the culprit, status 1, and leaves no output (nor temporary)."""
    model, blends, expected = _bad_inputs(tmp_path, models)[case]
    model = model or models / "deblender.pt"
    before = sorted(tmp_path.iterdir())
    status, err = _run(capsys, "deblend", model, blends, "-o", tmp_path / "out.fits")
    assert status == 1, err
    assert err.startswith("sourcelens deblend: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(tmp_path.iterdir()) == before


def test_damaged_weights_and_bad_outputs(tmp_path, models, capsys):
    blend = _write(tmp_path / "b.fits", _blend())
    payload = torch.load(models / "deblender.pt", weights_only=False)
    payload["state_dict"] = {k: v for i, (k, v) in enumerate(payload["state_dict"].items()) if i % 2}
    torch.save(payload, bad := tmp_path / "bad_weights.pt")
    before = sorted(tmp_path.iterdir())
    status, err = _run(capsys, "deblend", bad, blend, "-o", tmp_path / "c.fits")
    assert status == 1 and f"cannot load model '{bad}'" in err and len(err.strip().splitlines()) == 1, err
    status, err = _run(capsys, "deblend", models / "deblender.pt", blend, "-o", tmp_path / "c.npy")
    assert status == 1 and "must end in .fits" in err, err
    status, err = _run(capsys, "deblend", models / "deblender.pt", blend, "-o", blend)
    assert status == 1 and "is the input file" in err, err
    status, err = _run(capsys, "deblend", models / "deblender.pt", blend, "-o", tmp_path)
    assert status == 1 and "is a directory" in err, err
    if not torch.cuda.is_available():
        status, err = _run(capsys, "deblend", models / "deblender.pt", blend, "-o", tmp_path / "c.fits",
                           "--device", "cuda")
        assert status == 1 and "--device cuda: no CUDA device" in err, err
    assert sorted(tmp_path.iterdir()) == before
    with pytest.raises(SystemExit):
        main(["deblend", str(models / "deblender.pt"), str(blend), "-o", "x.fits", "--batch-size", "0"])
    assert "must be a positive integer" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["deblend", "--help"])
    assert exit_info.value.code == 0
    assert "model's band order" in " ".join(capsys.readouterr().out.split())
