"""`sourcelens vae encode/decode/reconstruct/fit` on FITS stamps and cubes, and its input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.io import fits

from sourcelens.cli import main
from sourcelens.models.vae import VAE, save_vae

SIZE, LATENT = 16, 4


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "vae.pt"
    save_vae(VAE(image_size=SIZE, latent_dim=LATENT, widths=(4, 8)).eval(), path)
    return path


def _galaxy(n: int = SIZE, amp: float = 3.0, shift: float = 0.0) -> np.ndarray:
    yy, xx = np.indices((n, n)) - (n - 1) / 2
    return amp * np.exp(-((xx - shift) ** 2 + yy**2 / 0.6) / (2 * 2.5**2))


def _write(path, data):
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32)).writeto(path)
    return path


def test_encode_decode_reconstruct_stamp_and_cube(tmp_path, model_path, capsys):
    stamp = _write(tmp_path / "stamp.fits", _galaxy())
    cube = _write(tmp_path / "cube.fits", np.stack([_galaxy(), _galaxy(amp=1.0, shift=1.5), _galaxy(amp=0.5)]))

    assert main(["vae", "encode", str(model_path), str(stamp)]) == 0  # default output beside the input
    z = np.load(tmp_path / "stamp_latents.npy")
    assert z.shape == (LATENT,)
    assert main(["vae", "encode", str(model_path), str(cube), "-o", str(tmp_path / "z.npy")]) == 0
    zc = np.load(tmp_path / "z.npy")
    assert zc.shape == (3, LATENT) and np.allclose(zc[0], z, atol=1e-5)
    # peak-normalised before encoding: a scaled copy has the same latents
    assert np.allclose(zc[0], zc[2], atol=1e-5)
    assert main(["vae", "encode", str(model_path), str(cube), "-o", str(tmp_path / "z.fits")]) == 0
    with fits.open(tmp_path / "z.fits") as hdul:
        assert np.allclose(hdul["LATENTS"].data["z"], zc, atol=1e-6)
        assert np.allclose(hdul["LATENTS"].data["peak"], fits.getdata(cube).max(axis=(1, 2)), rtol=1e-6)

    # decode from .npy (unit peak scale) and from the FITS table (rescaled by each peak)
    assert main(["vae", "decode", str(model_path), str(tmp_path / "z.npy"), "-o", str(tmp_path / "dec.fits")]) == 0
    assert main(["vae", "decode", str(model_path), str(tmp_path / "z.fits"), "-o", str(tmp_path / "dec2.fits")]) == 0
    dec, dec2 = fits.getdata(tmp_path / "dec.fits"), fits.getdata(tmp_path / "dec2.fits")
    assert dec.shape == dec2.shape == (3, SIZE, SIZE) and np.isfinite(dec).all()
    peaks = fits.getdata(cube).max(axis=(1, 2))
    assert np.allclose(dec2, dec * peaks[:, None, None], rtol=1e-5, atol=1e-6)

    assert main(["vae", "reconstruct", str(model_path), str(cube), "-o", str(tmp_path / "rec.fits")]) == 0
    rec = fits.getdata(tmp_path / "rec.fits")
    assert rec.shape == (3, SIZE, SIZE)
    assert np.allclose(rec, dec2, rtol=1e-3, atol=1e-5)
    assert main(["vae", "reconstruct", str(model_path), str(stamp), "-o", str(tmp_path / "rec1.fits")]) == 0
    assert fits.getdata(tmp_path / "rec1.fits").shape == (SIZE, SIZE)
    assert not list(tmp_path.glob(".*part"))  # atomic writes leave no temporaries


def test_fit_stamp_and_cube(tmp_path, model_path, capsys):
    rng = np.random.default_rng(1)
    sigma = 0.05
    truth = np.stack([_galaxy(), _galaxy(amp=1.5, shift=1.0)])
    cube = _write(tmp_path / "cube.fits", truth + rng.normal(0, sigma, truth.shape))
    out = tmp_path / "fit.fits"
    assert main(["vae", "fit", str(model_path), str(cube), "--sigma", str(sigma), "-o", str(out),
                 "--max-iter", "30"]) == 0
    assert "chi2/nu" in capsys.readouterr().out
    with fits.open(out) as hdul:
        model = hdul[0].data
        table = hdul["FIT"].data
        assert model.shape == truth.shape and np.isfinite(model).all()
        assert table["z"].shape == (2, LATENT)
        assert np.isfinite(table["chi2_nu"]).all() and (table["flux"] > 0).all()
    # the fitted model explains the data better than a blank image
    data = fits.getdata(cube)
    assert (((data - model) ** 2).sum(axis=(1, 2)) < (data**2).sum(axis=(1, 2))).all()

    stamp = _write(tmp_path / "stamp.fits", truth[0])
    sig_map = _write(tmp_path / "sigma.fits", np.full((SIZE, SIZE), sigma))
    assert main(["vae", "fit", str(model_path), str(stamp), "--sigma", str(sig_map), "-o", str(tmp_path / "f1.fits"),
                 "--max-iter", "5", "--init", "prior"]) == 0
    assert fits.getdata(tmp_path / "f1.fits").shape == (SIZE, SIZE)


def test_wrong_size_nan_and_bad_inputs(tmp_path, model_path, capsys):
    big = _write(tmp_path / "big.fits", _galaxy(n=SIZE * 2))
    assert main(["vae", "encode", str(model_path), str(big), "-o", str(tmp_path / "z.npy")]) == 1
    err = capsys.readouterr().err
    assert "big.fits" in err and f"{SIZE}×{SIZE}" in err and "--resize" in err
    assert not (tmp_path / "z.npy").exists()
    # --resize accepts it
    assert main(["vae", "reconstruct", str(model_path), str(big), "--resize", "-o", str(tmp_path / "r.fits")]) == 0
    assert fits.getdata(tmp_path / "r.fits").shape == (SIZE, SIZE)

    cube = np.stack([_galaxy(), _galaxy()])
    cube[1, 3, 4] = np.nan
    nan_path = _write(tmp_path / "holes.fits", cube)
    for cmd in (["encode"], ["reconstruct"], ["fit", "--sigma", "0.1"]):
        assert main(["vae", cmd[0], str(model_path), str(nan_path), *cmd[1:], "-o", str(tmp_path / "o.fits")]) == 1
        err = capsys.readouterr().err
        assert "holes.fits" in err and "NaN" in err and "stamps 1" in err
    assert not (tmp_path / "o.fits").exists()

    stamp = _write(tmp_path / "ok.fits", _galaxy())
    assert main(["vae", "fit", str(model_path), str(stamp), "--sigma", "-1", "-o", str(tmp_path / "o.fits")]) == 1
    assert "--sigma must be positive" in capsys.readouterr().err
    assert main(["vae", "encode", str(tmp_path / "nomodel.pt"), str(stamp)]) == 1
    assert "no such model file" in capsys.readouterr().err
    assert main(["vae", "encode", str(model_path), str(tmp_path / "missing.fits")]) == 1
    assert "no such file" in capsys.readouterr().err
    np.save(tmp_path / "wrong.npy", np.zeros((2, LATENT + 1)))
    assert main(["vae", "decode", str(model_path), str(tmp_path / "wrong.npy"), "-o", str(tmp_path / "d.fits")]) == 1
    assert f"N×{LATENT}" in capsys.readouterr().err
