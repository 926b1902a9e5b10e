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


def _decoder_truth(model_path, z: np.ndarray, flux: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Images made by the model's own decoder: flux × D(z) shifted by ``offset`` pixels (dx, dy),
    rendered as the fit renders them (so the truth is inside the model family)."""
    from sourcelens.fit.decoder import shift_zoom
    from sourcelens.models.vae import decode_latents, load_vae

    decoded = torch.as_tensor(decode_latents(load_vae(model_path), z), dtype=torch.float64)
    shifted = shift_zoom(decoded, torch.as_tensor(offset, dtype=torch.float64), torch.ones(len(z), dtype=torch.float64))
    return flux[:, None, None] * shifted.numpy()


def test_fit_stamp_and_cube(tmp_path, model_path, capsys):
    """Data from the decoder (known latents, flux, offset) plus noise: the fit explains it to the noise."""
    rng = np.random.default_rng(0)
    sigma = 0.05
    z_true = rng.normal(0.0, 1.0, (2, LATENT))
    flux_true, offset_true = np.array([3.0, 1.5]), np.array([[0.6, -0.4], [-0.3, 0.5]])
    truth = _decoder_truth(model_path, z_true, flux_true, offset_true)
    cube = _write(tmp_path / "cube.fits", truth + rng.normal(0, sigma, truth.shape))
    out = tmp_path / "fit.fits"
    assert main(["vae", "fit", str(model_path), str(cube), "--sigma", str(sigma), "-o", str(out)]) == 0
    assert "chi2/nu" in capsys.readouterr().out
    with fits.open(out) as hdul:
        model = hdul[0].data.astype(np.float64)
        table = hdul["FIT"].data
        assert model.shape == truth.shape and np.isfinite(model).all()
        assert table["z"].shape == (2, LATENT)
        chi2_nu, flux = np.array(table["chi2_nu"]), np.array(table["flux"])
        offset = np.stack([table["dx"], table["dy"]], axis=1)
    data = fits.getdata(cube).astype(np.float64)
    n_free = SIZE * SIZE - (LATENT + 4)
    chi2_true = (((data - truth) / sigma) ** 2).sum(axis=(1, 2))
    # explained to the noise: chi2/nu near 1, and no worse than the truth itself (up to the prior term,
    # 1/2 |z|^2, which the fit trades against 1/2 chi2)
    assert np.all(np.abs(chi2_nu - 1.0) < 0.15), chi2_nu
    assert np.all(chi2_nu * n_free <= chi2_true + (z_true**2).sum(axis=1) + 1.0), (chi2_nu * n_free, chi2_true)
    assert np.allclose((((data - model) / sigma) ** 2).sum(axis=(1, 2)) / n_free, chi2_nu, rtol=1e-3)
    # and the parameters come back: flux within 2 %, offsets within 0.1 pixel
    assert np.allclose(flux, flux_true, rtol=0.02), flux
    assert np.abs(offset - offset_true).max() < 0.1, offset

    stamp = _write(tmp_path / "stamp.fits", data[0])
    sig_map = _write(tmp_path / "sigma.fits", np.full((SIZE, SIZE), sigma))
    assert main(["vae", "fit", str(model_path), str(stamp), "--sigma", str(sig_map), "-o", str(tmp_path / "f1.fits"),
                 "--max-iter", "5", "--init", "prior"]) == 0
    assert fits.getdata(tmp_path / "f1.fits").shape == (SIZE, SIZE)


def test_fit_with_posterior(tmp_path, model_path, capsys):
    """--posterior laplace writes per-pixel mean and std maps that hold the truth as often as they claim."""
    rng = np.random.default_rng(4)
    sigma = 0.05
    z_true = rng.normal(0.0, 1.0, (3, LATENT))
    truth = _decoder_truth(model_path, z_true, np.array([3.0, 2.0, 2.5]), np.array([[0.3, 0.1], [0.0, -0.2], [0.2, 0.2]]))
    cube = _write(tmp_path / "cube.fits", truth + rng.normal(0, sigma, truth.shape))
    out = tmp_path / "post.fits"
    assert main(["vae", "fit", str(model_path), str(cube), "--sigma", str(sigma), "-o", str(out),
                 "--posterior", "laplace", "--samples", "100"]) == 0
    assert "POSTERIOR_STD" in capsys.readouterr().out
    with fits.open(out) as hdul:
        mean, std = hdul["POSTERIOR_MEAN"].data.astype(float), hdul["POSTERIOR_STD"].data.astype(float)
        model, table = hdul[0].data.astype(float), hdul["FIT"].data
        assert hdul["POSTERIOR_STD"].header["METHOD"] == "laplace"
        assert table["z_std"].shape == (3, LATENT) and np.all(table["flux_std"] > 0)
    assert mean.shape == std.shape == truth.shape and np.all(std >= 0)
    assert np.abs(mean - model).max() < 0.5 * sigma          # the mean of draws about the fit is the fit
    galaxy = truth > 0.05 * truth.max(axis=(1, 2), keepdims=True)
    inside = np.abs(truth - mean) <= 2 * std
    assert 0.8 < inside[galaxy].mean() <= 1.0, inside[galaxy].mean()
    assert main(["vae", "fit", str(model_path), str(cube), "--sigma", str(sigma), "-o", str(tmp_path / "x.fits"),
                 "--posterior", "laplace", "--samples", "1"]) == 1
    assert "--samples must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "x.fits").exists()


def test_output_directory_and_missing_hdu(tmp_path, model_path, capsys):
    """-o naming a directory and --hdu naming an HDU the file lacks get messages, not tracebacks."""
    stamp = _write(tmp_path / "stamp.fits", _galaxy())
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    for cmd in ("reconstruct", "fit", "encode"):
        extra = ["--sigma", "0.1"] if cmd == "fit" else []
        assert main(["vae", cmd, str(model_path), str(stamp), *extra, "-o", str(outdir)]) == 1
        err = capsys.readouterr().err
        assert f"-o/--output '{outdir}' is a directory" in err and "give a file name" in err, err
    assert list(outdir.iterdir()) == []

    with_ext = tmp_path / "sci.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.float32(_galaxy()), name="SCI")]).writeto(with_ext)
    assert main(["vae", "encode", str(model_path), str(with_ext), "--hdu", "SCI", "-o", str(tmp_path / "z.npy")]) == 0
    assert np.load(tmp_path / "z.npy").shape == (LATENT,)
    for hdu in ("5", "ERR"):
        assert main(["vae", "encode", str(model_path), str(with_ext), "--hdu", hdu, "-o", str(tmp_path / "y.npy")]) == 1
        err = capsys.readouterr().err
        assert f"--hdu {hdu} does not exist: '{with_ext}' has 2 HDUs (0: PRIMARY, 1: SCI)" in err, err
    assert main(["vae", "encode", str(model_path), str(with_ext), "--hdu", "0", "-o", str(tmp_path / "y.npy")]) == 1
    assert "--hdu 0: that HDU of" in (err := capsys.readouterr().err) and "has no data" in err, err
    assert not (tmp_path / "y.npy").exists()


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
