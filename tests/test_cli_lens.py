"""`sourcelens lens predict` and `sourcelens delens` on FITS images and cubes, and their input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits

from sourcelens.cli import main
from sourcelens.models import LensCNN, UNet, save_cnn, save_unet
from sourcelens.models.cnn import load_cnn, predict_lens_params
from sourcelens.models.unet import delens, load_unet
from sourcelens.names import LENS_PARAMETERS

SIZE, SCALE = 32, 0.04
COLUMNS = ["index"] + [c for p in LENS_PARAMETERS for c in (p, p + "_sigma")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An untrained CNN, U-Nets with and without a recorded source grid, and a VAE (a model of another kind)."""
    from sourcelens.models import VAE, save_vae

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    save_cnn(LensCNN(image_size=SIZE, widths=[8, 16], dense=16), folder / "cnn.pt")
    save_unet(UNet(image_size=SIZE, widths=[8, 16, 32]), folder / "unet.pt",
              extra={"source_grid": {"num_pix": SIZE, "pixel_scale_arcsec": SCALE}})
    save_unet(UNet(image_size=SIZE, widths=[8, 16, 32]), folder / "unet_nogrid.pt")
    save_vae(VAE(image_size=SIZE, latent_dim=4, widths=(4, 8)), folder / "vae.pt")
    return folder


def _ring(n: int = SIZE, amp: float = 5.0, radius: float = 8.0, seed: int = 0) -> np.ndarray:
    """A lensed-looking image: an Einstein ring with a brighter arc, plus noise."""
    yy, xx = np.indices((n, n)) - (n - 1) / 2
    r, phi = np.hypot(xx, yy), np.arctan2(yy, xx)
    ring = np.exp(-((r - radius) ** 2) / 2.0) * (1 + np.cos(phi))
    return amp * ring + np.random.default_rng(seed).normal(0, 0.05, (n, n))


def _cube(n: int = 3) -> np.ndarray:
    return np.stack([_ring(amp=1.0 + i, radius=6.0 + 2 * i, seed=i) for i in range(n)])


def _write(path, data):
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32)).writeto(path)
    return path


def _run(capsys, *argv) -> tuple[int, str]:
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def test_predict_stamp_and_cube(tmp_path, models, capsys):
    stamp = _write(tmp_path / "stamp.fits", _ring())
    cube = _write(tmp_path / "cube.fits", _cube())
    cnn = load_cnn(models / "cnn.pt")

    assert _run(capsys, "lens", "predict", models / "cnn.pt", stamp)[0] == 0  # default output beside the input
    one = pd.read_csv(tmp_path / "stamp_lens.csv", comment="#")
    assert list(one.columns) == COLUMNS and len(one) == 1
    header = [line for line in (tmp_path / "stamp_lens.csv").read_text().splitlines() if line.startswith("#")]
    assert any("theta_E, center_x, center_y in arcsec" in line for line in header), header

    assert _run(capsys, "lens", "predict", models / "cnn.pt", cube, "-o", tmp_path / "p.csv")[0] == 0
    table = pd.read_csv(tmp_path / "p.csv", comment="#")
    mean, sigma = predict_lens_params(cnn, fits.getdata(cube))
    assert list(table["index"]) == [0, 1, 2]
    assert np.allclose(table[list(LENS_PARAMETERS)].to_numpy(), mean, rtol=1e-6, atol=1e-7)
    assert np.allclose(table[[p + "_sigma" for p in LENS_PARAMETERS]].to_numpy(), sigma, rtol=1e-6, atol=1e-7)
    assert (table[[p + "_sigma" for p in LENS_PARAMETERS]].to_numpy() > 0).all()
    assert np.allclose(one[list(LENS_PARAMETERS)].to_numpy(), predict_lens_params(cnn, fits.getdata(stamp)[None])[0],
                       rtol=1e-6, atol=1e-7)

    out = tmp_path / "p.fits"
    assert _run(capsys, "lens", "predict", models / "cnn.pt", cube, "-o", out, "--batch-size", "2")[0] == 0
    with fits.open(out) as hdul:
        data, cols = hdul["LENS_PARAMS"].data, hdul["LENS_PARAMS"].columns
        assert cols.names == COLUMNS
        units = dict(zip(cols.names, cols.units))
        assert units["theta_E"] == units["theta_E_sigma"] == units["center_y"] == "arcsec"
        assert not units["gamma"] and not units["e1_sigma"]
        assert hdul[0].header["CNNMODEL"] == "cnn.pt" and hdul[0].header["INPUT"] == "cube.fits"
        assert np.allclose(np.stack([data[p] for p in LENS_PARAMETERS], axis=1), mean, rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob(".*part"))

    # `sourcelens info` reads the CSV with its header comment
    assert main(["info", str(tmp_path / "p.csv")]) == 0
    shown = capsys.readouterr().out
    assert "(table, 3 rows × 17 columns)" in shown and "arcsec" in shown


def test_predict_hdu(tmp_path, models, capsys):
    path = tmp_path / "sci.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.float32(_ring()), name="SCI")]).writeto(path)
    assert _run(capsys, "lens", "predict", models / "cnn.pt", path, "--hdu", "SCI", "-o", tmp_path / "a.csv")[0] == 0
    assert len(pd.read_csv(tmp_path / "a.csv", comment="#")) == 1
    status, err = _run(capsys, "lens", "predict", models / "cnn.pt", path, "--hdu", "0", "-o", tmp_path / "b.csv")
    assert status == 1 and "has no data" in err and str(path) in err
    assert not (tmp_path / "b.csv").exists()


def test_delens_stamp_and_cube(tmp_path, models, capsys):
    stamp = _write(tmp_path / "stamp.fits", _ring())
    cube = _write(tmp_path / "cube.fits", _cube())
    unet = load_unet(models / "unet.pt")

    assert _run(capsys, "delens", models / "unet.pt", cube, "-o", tmp_path / "src.fits")[0] == 0
    with fits.open(tmp_path / "src.fits") as hdul:
        sources, header = hdul[0].data, hdul[0].header
    assert sources.shape == (3, SIZE, SIZE)
    assert np.allclose(sources, delens(unet, fits.getdata(cube)), rtol=1e-5, atol=1e-6)
    assert header["CONTENT"] == "delensed source" and header["SRCNORM"] == "peak"
    assert header["GRIDCEN"] == "optical axis" and header["UNETMODL"] == "unet.pt"
    assert header["CDELT1"] == header["CDELT2"] == header["PIXSCALE"] == SCALE
    assert header["CUNIT1"] == "arcsec" and header["CRPIX1"] == header["CRPIX2"] == (SIZE + 1) / 2
    assert header["CRVAL1"] == header["CRVAL2"] == 0.0

    assert _run(capsys, "delens", models / "unet.pt", stamp, "-o", tmp_path / "one.fits")[0] == 0
    one = fits.getdata(tmp_path / "one.fits")
    assert one.shape == (SIZE, SIZE)
    assert np.allclose(one, delens(unet, fits.getdata(stamp)[None])[0], rtol=1e-5, atol=1e-6)
    assert fits.getheader(tmp_path / "one.fits")["DIHEDRAL"] is True
    # --single-pass: one pass of the network, not the mean over the 8 turns
    assert _run(capsys, "delens", models / "unet.pt", stamp, "-o", tmp_path / "fast.fits", "--single-pass")[0] == 0
    fast = fits.getdata(tmp_path / "fast.fits")
    assert np.allclose(fast, delens(unet, fits.getdata(stamp)[None], dihedral=False)[0], rtol=1e-5, atol=1e-6)
    assert fits.getheader(tmp_path / "fast.fits")["DIHEDRAL"] is False and not np.allclose(fast, one, atol=1e-4)

    # a model without a recorded source grid: nothing said about the pixel scale
    assert _run(capsys, "delens", models / "unet_nogrid.pt", stamp, "-o", tmp_path / "ng.fits")[0] == 0
    header = fits.getheader(tmp_path / "ng.fits")
    assert header["SRCNORM"] == "peak" and header["GRIDCEN"] == "optical axis"
    assert not {"CDELT1", "CDELT2", "PIXSCALE", "CUNIT1"} & set(header)
    assert not list(tmp_path.glob(".*part"))


def _bad_inputs(tmp_path, models) -> dict[str, tuple]:
    """Bad cases: (model, images, the text the message must contain) by name."""
    big = _write(tmp_path / "big.fits", _ring(n=SIZE * 2))
    holes = _cube()
    holes[1, 3, 4] = np.inf
    holes = _write(tmp_path / "holes.fits", holes)
    (text := tmp_path / "notes.fits").write_text("not a FITS file\n" * 20)
    _write(tmp_path / "full.fits", _ring())
    (cut := tmp_path / "cut.fits").write_bytes((tmp_path / "full.fits").read_bytes()[:3000])
    good = _write(tmp_path / "good.fits", _ring())
    (junk := tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    (half := tmp_path / "half.pt").write_bytes((models / "cnn.pt").read_bytes()[:2000])
    return {
        "size": (None, big, f"'{big}': stamps are {2 * SIZE}×{2 * SIZE} but the model takes {SIZE}×{SIZE}"),
        "nan": (None, holes, f"'{holes}' contains NaN or infinite pixels (stamps 1)"),
        "not fits": (None, text, f"cannot read FITS file '{text}'"),
        "truncated fits": (None, cut, f"cannot read FITS file '{cut}'"),
        "missing image": (None, tmp_path / "none.fits", f"no such file: {tmp_path / 'none.fits'}"),
        "vae model": (models / "vae.pt", good, f"'{models / 'vae.pt'}' is not a sourcelens"),
        "damaged model": (junk, good, f"'{junk}' could not be read as a model file"),
        "truncated model": (half, good, f"'{half}' could not be read as a model file"),
        "missing model": (tmp_path / "none.pt", good, f"no such model file: {tmp_path / 'none.pt'}"),
    }


@pytest.mark.parametrize("command", ["predict", "delens"])
@pytest.mark.parametrize("case", ["size", "nan", "not fits", "truncated fits", "missing image", "vae model",
                                  "damaged model", "truncated model", "missing model"])
def test_bad_inputs(tmp_path, models, capsys, command, case):
    """Each bad input stops with one line naming the culprit, status 1, and leaves no output (nor temporary)."""
    model, images, expected = _bad_inputs(tmp_path, models)[case]
    model = model or models / ("cnn.pt" if command == "predict" else "unet.pt")
    before = sorted(tmp_path.iterdir())
    out = tmp_path / "out.fits"
    argv = ["lens", "predict"] if command == "predict" else ["delens"]
    status, err = _run(capsys, *argv, model, images, "-o", out)
    assert status == 1, err
    assert err.startswith(f"sourcelens {' '.join(argv)}: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(tmp_path.iterdir()) == before


def test_model_of_the_other_kind_and_damaged_weights(tmp_path, models, capsys):
    image = _write(tmp_path / "img.fits", _ring())
    status, err = _run(capsys, "lens", "predict", models / "unet.pt", image, "-o", tmp_path / "p.csv")
    assert status == 1 and f"'{models / 'unet.pt'}' is not a sourcelens lens-parameter CNN model file" in err, err
    status, err = _run(capsys, "delens", models / "cnn.pt", image, "-o", tmp_path / "s.fits")
    assert status == 1 and f"'{models / 'cnn.pt'}' is not a sourcelens U-Net delensing model file" in err, err
    # the right format tag but weights that do not fit the architecture
    payload = torch.load(models / "cnn.pt", weights_only=False)
    payload["state_dict"] = {k: v for i, (k, v) in enumerate(payload["state_dict"].items()) if i % 2}
    torch.save(payload, bad := tmp_path / "bad_weights.pt")
    status, err = _run(capsys, "lens", "predict", bad, image, "-o", tmp_path / "p.csv")
    assert status == 1 and f"cannot load model '{bad}'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "s.fits").exists()
    assert not list(tmp_path.glob(".*part"))


def test_bad_outputs(tmp_path, models, capsys):
    """Outputs refused before any work: wrong suffix, the input itself, a directory."""
    image = _write(tmp_path / "img.fits", _ring())
    before = sorted(tmp_path.iterdir())
    status, err = _run(capsys, "lens", "predict", models / "cnn.pt", image, "-o", tmp_path / "p.txt")
    assert status == 1 and "must end in .csv or .fits" in err, err
    status, err = _run(capsys, "delens", models / "unet.pt", image, "-o", tmp_path / "s.npy")
    assert status == 1 and "must end in .fits" in err, err
    status, err = _run(capsys, "delens", models / "unet.pt", image, "-o", image)
    assert status == 1 and "is the input file" in err, err
    status, err = _run(capsys, "lens", "predict", models / "cnn.pt", image, "-o", tmp_path)
    assert status == 1 and "is a directory" in err, err
    assert sorted(tmp_path.iterdir()) == before
    with pytest.raises(SystemExit):
        main(["lens", "predict", str(models / "cnn.pt"), str(image), "--batch-size", "0"])
    assert "must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "expected"), [(["lens", "predict", "--help"], "uncertainty"),
                                                (["delens", "--help"], "source grid")])
def test_help(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert expected in " ".join(capsys.readouterr().out.split())
