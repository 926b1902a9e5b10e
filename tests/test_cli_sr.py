"""`sourcelens super-resolve` on FITS images and cubes (every method, with and without a lens file), and its
input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.io import fits

from sourcelens.cli import main
from sourcelens.lensing import SRGeometry, SRLens, psf_kernel
from sourcelens.models.lenssr import (
    LensSRNoSource,
    lenssr_super_resolve,
    load_lenssr,
    save_lenssr,
)
from sourcelens.models.pisr import PISR, load_pisr, pisr_super_resolve, save_pisr
from sourcelens.models.sisr import (
    SISR,
    bicubic_super_resolve,
    load_sisr,
    save_sisr,
    super_resolve,
)

N, SCALE, FACTOR = 16, 0.2, 2
PSF = {"type": "GAUSSIAN", "fwhm_arcsec": 0.3}
GRID = {"low_res_num_pix": N, "low_res_pixel_scale_arcsec": SCALE, "factor": FACTOR, "psf": PSF,
        "lens_model": "SIE"}
LENS = {"lens_model": "SIE", "theta_E": 0.8, "e1": 0.1, "e2": 0.0, "center_x": 0.0, "center_y": 0.0}
CPU = torch.device("cpu")


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Non-zero weights everywhere (an untrained bicubic-skip network would be plain bicubic)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny SR networks of every method (with the grid record training writes) and a VAE (another kind)."""
    from sourcelens.models import VAE, save_vae

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("models")
    sisr = {"width": 4, "depth": 1}
    save_sisr(_perturb(SISR(FACTOR, **sisr)), d / "supervised.pt", extra={"method": "supervised", "grid": GRID})
    save_sisr(_perturb(SISR(FACTOR, **sisr)), d / "with_source.pt",
              extra={"method": "lenssr_with_source", "grid": GRID})
    save_sisr(_perturb(SISR(FACTOR, **sisr)), d / "nogrid.pt", extra={"method": "supervised"})
    save_lenssr(_perturb(LensSRNoSource(FACTOR, sisr)), d / "lenssr.pt",
                extra={"method": "lenssr_no_source", "grid": GRID})
    save_pisr(_perturb(PISR(FACTOR, sisr=sisr)), d / "pisr.pt", extra={"method": "pisr", "grid": GRID})
    save_pisr(_perturb(PISR(FACTOR, sisr=sisr)), d / "pisr_nogrid.pt")
    save_vae(VAE(image_size=N, latent_dim=4, widths=(4, 8)), d / "vae.pt")
    return d


def _arc(n: int = N, seed: int = 0, amp: float = 3.0) -> np.ndarray:
    yy, xx = np.indices((n, n)) - (n - 1) / 2
    r, phi = np.hypot(xx, yy), np.arctan2(yy, xx)
    return amp * np.exp(-((r - n / 4) ** 2) / 2.0) * (1 + np.cos(phi)) + \
        np.random.default_rng(seed).normal(0, 0.05, (n, n))


def _cube(k: int = 3) -> np.ndarray:
    return np.stack([_arc(seed=i, amp=1.0 + i) for i in range(k)])


def _write(path, data):
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32)).writeto(path)
    return path


def _yaml(path, text: str):
    path.write_text(text)
    return path


def _lens_yaml(path, lenses) -> object:
    import yaml

    path.write_text(yaml.safe_dump(lenses))
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _geometry() -> SRGeometry:
    return SRGeometry(N, SCALE, FACTOR, psf_kernel(PSF, SCALE / FACTOR, FACTOR))


def _sie(**kw) -> SRLens:
    p = {k: v for k, v in (LENS | kw).items() if k != "lens_model"}
    return SRLens(_geometry(), ["SIE"], [p])


def test_bicubic_without_a_model(tmp_path, capsys):
    stamp, cube = _write(tmp_path / "stamp.fits", _arc()), _write(tmp_path / "cube.fits", _cube())
    status, _, err = _run(capsys, "super-resolve", "--method", "bicubic", stamp, "-o", tmp_path / "a.fits")
    assert status == 0, err
    with fits.open(tmp_path / "a.fits") as hdul:
        assert len(hdul) == 1
        image, header = hdul[0].data, hdul[0].header
    assert image.shape == (2 * N, 2 * N)
    np.testing.assert_allclose(image, bicubic_super_resolve(fits.getdata(stamp)[None], 2)[0], rtol=1e-6, atol=1e-7)
    assert header["SRMETHOD"] == "bicubic" and header["SRFACTOR"] == 2 and "PIXSCALE" not in header
    assert "SRMODEL" not in header
    # a cube, another factor, a pixel scale for the header
    status, _, err = _run(capsys, "super-resolve", "--method", "bicubic", cube, "-o", tmp_path / "b.fits",
                          "--factor", "3", "--pixel-scale", "0.3")
    assert status == 0, err
    with fits.open(tmp_path / "b.fits") as hdul:
        assert hdul[0].data.shape == (3, 3 * N, 3 * N)
        assert hdul[0].header["PIXSCALE"] == pytest.approx(0.1) and hdul[0].header["LRSCALE"] == 0.3
    assert "flux" in fits.getheader(tmp_path / "b.fits").comments["CONTENT"]
    assert not list(tmp_path.glob(".*part"))


@pytest.mark.parametrize("name", ["supervised", "with_source"])
def test_sisr_methods_need_no_lens(tmp_path, models, capsys, name):
    cube, stamp = _write(tmp_path / "cube.fits", _cube()), _write(tmp_path / "stamp.fits", _arc())
    model = load_sisr(models / f"{name}.pt")
    status, out, err = _run(capsys, "super-resolve", models / f"{name}.pt", cube, "-o", tmp_path / "sr.fits")
    assert status == 0, err
    with fits.open(tmp_path / "sr.fits") as hdul:
        assert len(hdul) == 1
        image, header = hdul[0].data, hdul[0].header
    assert image.shape == (3, 2 * N, 2 * N)
    np.testing.assert_allclose(image, super_resolve(model, fits.getdata(cube), device=CPU), rtol=1e-5, atol=1e-6)
    assert not np.allclose(image, bicubic_super_resolve(fits.getdata(cube), 2), atol=1e-4)   # a real network
    method = "supervised" if name == "supervised" else "lenssr_with_source"
    assert header["SRMETHOD"] == method and header["SRMODEL"] == f"{name}.pt"
    assert header["PIXSCALE"] == header["CDELT1"] == pytest.approx(SCALE / FACTOR)
    assert header["CRPIX1"] == (2 * N + 1) / 2 and header["CUNIT2"] == "arcsec"
    # a lens file is read (and checked) but not used
    lens = _lens_yaml(tmp_path / "lens.yaml", LENS)
    status, out, err = _run(capsys, "super-resolve", models / f"{name}.pt", stamp, "--lens", lens,
                            "-o", tmp_path / "one.fits")
    assert status == 0 and "does not use a lens" in out, err
    one = fits.getdata(tmp_path / "one.fits")
    assert one.shape == (2 * N, 2 * N)
    np.testing.assert_allclose(one, super_resolve(model, fits.getdata(stamp)[None], device=CPU)[0], rtol=1e-5,
                               atol=1e-6)
    assert "LENSFILE" not in fits.getheader(tmp_path / "one.fits")
    # --method bicubic with a model: bicubic on the model's grid
    status, _, err = _run(capsys, "super-resolve", models / f"{name}.pt", stamp, "--method", "bicubic",
                          "-o", tmp_path / "bic.fits")
    assert status == 0, err
    header = fits.getheader(tmp_path / "bic.fits")
    assert header["SRMETHOD"] == "bicubic" and header["PIXSCALE"] == pytest.approx(SCALE / FACTOR)


def test_pisr_with_one_lens_and_one_per_image(tmp_path, models, capsys):
    cube = _write(tmp_path / "cube.fits", _cube())
    pisr = load_pisr(models / "pisr.pt")
    lens = _lens_yaml(tmp_path / "lens.yaml", LENS)
    status, out, err = _run(capsys, "super-resolve", models / "pisr.pt", cube, "--lens", lens,
                            "-o", tmp_path / "sr.fits")
    assert status == 0 and "HDU SOURCE" in out, err
    expect_image, expect_source = pisr_super_resolve(pisr, [_sie()] * 3, fits.getdata(cube))
    with fits.open(tmp_path / "sr.fits") as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SOURCE"]
        np.testing.assert_allclose(hdul[0].data, expect_image, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(hdul["SOURCE"].data, expect_source, rtol=1e-5, atol=1e-6)
        assert hdul[0].header["SRMETHOD"] == "pisr" and hdul[0].header["LENSFILE"] == "lens.yaml"
        assert hdul["SOURCE"].header["PIXSCALE"] == pytest.approx(SCALE / FACTOR)
        assert hdul["SOURCE"].header["CONTENT"] == "source"
    # one lens per image (centres default to 0), and a single image
    per_image = [LENS | {"theta_E": 0.6 + 0.1 * i} for i in range(3)]
    del per_image[1]["center_x"], per_image[1]["center_y"]
    lenses = _lens_yaml(tmp_path / "lenses.yaml", per_image)
    status, _, err = _run(capsys, "super-resolve", models / "pisr.pt", cube, "--lens", lenses,
                          "-o", tmp_path / "each.fits", "--batch-size", "2")
    assert status == 0, err
    expect, _ = pisr_super_resolve(pisr, [_sie(theta_E=0.6 + 0.1 * i) for i in range(3)], fits.getdata(cube))
    np.testing.assert_allclose(fits.getdata(tmp_path / "each.fits"), expect, rtol=1e-5, atol=1e-6)
    stamp = _write(tmp_path / "stamp.fits", _arc())
    status, _, err = _run(capsys, "super-resolve", models / "pisr.pt", stamp, "--lens", lens, "--method", "pisr",
                          "-o", tmp_path / "one.fits")
    assert status == 0, err
    with fits.open(tmp_path / "one.fits") as hdul:
        assert hdul[0].data.shape == hdul["SOURCE"].data.shape == (2 * N, 2 * N)
    # external shear in the lens file
    shear = _lens_yaml(tmp_path / "shear.yaml", LENS | {"gamma1": 0.05, "gamma2": -0.02})
    assert _run(capsys, "super-resolve", models / "pisr.pt", stamp, "--lens", shear, "-o",
                tmp_path / "shear.fits")[0] == 0
    assert not np.allclose(fits.getdata(tmp_path / "shear.fits"), fits.getdata(tmp_path / "one.fits"))
    assert not list(tmp_path.glob(".*part"))


def test_lenssr_no_source_with_and_without_lens(tmp_path, models, capsys):
    cube = _write(tmp_path / "cube.fits", _cube())
    net = load_lenssr(models / "lenssr.pt")
    status, out, err = _run(capsys, "super-resolve", models / "lenssr.pt", cube, "-o", tmp_path / "a.fits")
    assert status == 0 and "SOURCE" not in out, err
    image, _ = lenssr_super_resolve(net, fits.getdata(cube))
    with fits.open(tmp_path / "a.fits") as hdul:
        assert len(hdul) == 1 and hdul[0].header["SRMETHOD"] == "lenssr_no_source"
        np.testing.assert_allclose(hdul[0].data, image, rtol=1e-5, atol=1e-6)
    lens = _lens_yaml(tmp_path / "lens.yaml", [LENS])          # a list of one lens: for every image
    status, _, err = _run(capsys, "super-resolve", models / "lenssr.pt", cube, "--lens", lens,
                          "-o", tmp_path / "b.fits")
    assert status == 0, err
    image, source = lenssr_super_resolve(net, fits.getdata(cube), [_sie()] * 3)
    with fits.open(tmp_path / "b.fits") as hdul:
        np.testing.assert_allclose(hdul[0].data, image, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(hdul["SOURCE"].data, source, rtol=1e-5, atol=1e-6)


def _bad_cases(tmp_path, models) -> dict[str, tuple[list, str]]:
    """Bad cases: (arguments after 'super-resolve', the text the message must contain) by name."""
    good = _write(tmp_path / "good.fits", _arc())
    big = _write(tmp_path / "big.fits", _arc(n=2 * N))
    holes = _cube()
    holes[2, 1, 1] = np.nan
    holes = _write(tmp_path / "holes.fits", holes)
    (text := tmp_path / "notes.fits").write_text("not a FITS file\n" * 20)
    (junk := tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    lens = _lens_yaml(tmp_path / "lens.yaml", LENS)
    typo = _lens_yaml(tmp_path / "typo.yaml", {k if k != "theta_E" else "thetaE": v for k, v in LENS.items()})
    nfw = _lens_yaml(tmp_path / "nfw.yaml", LENS | {"lens_model": "NFW"})
    nomodel = _lens_yaml(tmp_path / "nomodel.yaml", {k: v for k, v in LENS.items() if k != "lens_model"})
    noe1 = _lens_yaml(tmp_path / "noe1.yaml", [LENS, {k: v for k, v in LENS.items() if k != "e1"}])
    word = _lens_yaml(tmp_path / "word.yaml", LENS | {"theta_E": "big"})
    half_shear = _lens_yaml(tmp_path / "half.yaml", LENS | {"gamma1": 0.1})
    two = _lens_yaml(tmp_path / "two.yaml", [LENS, LENS])
    broken = _yaml(tmp_path / "broken.yaml", "lens_model: SIE\ntheta_E: [1.0\n")
    scalar = _yaml(tmp_path / "scalar.yaml", "1.5\n")
    m = models
    return {
        "size": ([m / "pisr.pt", big, "--lens", lens],
                 f"'{big}': stamps are {2 * N}×{2 * N} but the model takes {N}×{N}"),
        "nan": ([m / "supervised.pt", holes], f"'{holes}' contains NaN or infinite pixels (stamps 2)"),
        "not fits": ([m / "supervised.pt", text], f"cannot read FITS file '{text}'"),
        "missing image": ([m / "supervised.pt", tmp_path / "none.fits"], f"no such file: {tmp_path / 'none.fits'}"),
        "vae model": ([m / "vae.pt", good],
                      (f"'{m / 'vae.pt'}' is not a sourcelens super-resolution model file (SISR, LensSR or PISR; "
                       "format 'sourcelens-vae")),
        "damaged model": ([junk, good], f"'{junk}' could not be read as a model file"),
        "missing model": ([tmp_path / "none.pt", good], f"no such model file: {tmp_path / 'none.pt'}"),
        "no model": ([good], "give a super-resolution model file, or --method bicubic"),
        "other method": ([m / "pisr.pt", good, "--method", "supervised"],
                         f"'{m / 'pisr.pt'}' is a pisr model, not supervised"),
        "missing lens": ([m / "pisr.pt", good], f"the pisr model '{m / 'pisr.pt'}' needs the lens of the images"),
        "missing lens file": ([m / "pisr.pt", good, "--lens", tmp_path / "none.yaml"],
                              f"no such lens file: {tmp_path / 'none.yaml'}"),
        "lens key": ([m / "pisr.pt", good, "--lens", typo],
                     f"lens file '{typo}': unknown key 'thetaE' for a SIE lens; expected theta_E, e1, e2"),
        "lens model": ([m / "pisr.pt", good, "--lens", nfw], f"lens file '{nfw}': lens_model 'NFW' is not one of"),
        "no lens model": ([m / "pisr.pt", good, "--lens", nomodel], f"lens file '{nomodel}': no 'lens_model' key"),
        "lens missing key": ([m / "pisr.pt", _write(tmp_path / "pair.fits", _cube(2)), "--lens", noe1],
                             f"lens file '{noe1}', lens 1: a SIE lens needs 'e1'"),
        "lens value": ([m / "pisr.pt", good, "--lens", word],
                       f"lens file '{word}': 'theta_E' must be a finite number, got 'big'"),
        "half shear": ([m / "pisr.pt", good, "--lens", half_shear], "external shear needs both 'gamma1' and 'gamma2'"),
        "lens count": ([m / "pisr.pt", _write(tmp_path / "three.fits", _cube(3)), "--lens", two],
                       f"lens file '{two}' has 2 lenses for 3 images"),
        "not yaml": ([m / "pisr.pt", good, "--lens", broken], f"cannot read lens file '{broken}'"),
        "lens scalar": ([m / "pisr.pt", good, "--lens", scalar], f"lens file '{scalar}': expected a mapping"),
        "bad lens, sisr": ([m / "supervised.pt", good, "--lens", typo], "unknown key 'thetaE'"),
        "no pixel scale": ([m / "pisr_nogrid.pt", good, "--lens", lens], "records no pixel scale"),
        "pixel scale": ([m / "pisr.pt", good, "--lens", lens, "--pixel-scale", "0.1"],
                        "was trained on 0.2\" pixels"),
        "factor": ([m / "pisr.pt", good, "--lens", lens, "--factor", "3"], "super-resolves by 2"),
        "output suffix": ([m / "supervised.pt", good, "-o", tmp_path / "sr.npy"], "must end in .fits"),
    }


CASES = ["size", "nan", "not fits", "missing image", "vae model", "damaged model", "missing model", "no model",
         "other method", "missing lens", "missing lens file", "lens key", "lens model", "no lens model",
         "lens missing key", "lens value", "half shear", "lens count", "not yaml", "lens scalar", "bad lens, sisr",
         "no pixel scale", "pixel scale", "factor", "output suffix"]


@pytest.mark.parametrize("case", CASES)
def test_bad_inputs(tmp_path, models, capsys, case):
    """Each bad input stops with one line naming the culprit, status 1, and leaves no output (nor temporary)."""
    argv, expected = _bad_cases(tmp_path, models)[case]
    if "-o" not in argv:
        argv = [*argv, "-o", tmp_path / "out.fits"]
    before = sorted(tmp_path.iterdir())
    status, _, err = _run(capsys, "super-resolve", *argv)
    assert status == 1, err
    assert err.startswith("sourcelens super-resolve: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(tmp_path.iterdir()) == before


def test_model_without_grid_takes_any_size(tmp_path, models, capsys):
    """A model file without a grid record (saved by hand): any square size, no pixel scale unless given."""
    big = _write(tmp_path / "big.fits", _arc(n=24))
    status, _, err = _run(capsys, "super-resolve", models / "nogrid.pt", big, "-o", tmp_path / "sr.fits")
    assert status == 0, err
    assert fits.getdata(tmp_path / "sr.fits").shape == (48, 48)
    assert "PIXSCALE" not in fits.getheader(tmp_path / "sr.fits")
    lens = _lens_yaml(tmp_path / "lens.yaml", LENS)
    status, _, err = _run(capsys, "super-resolve", models / "pisr_nogrid.pt", big, "--lens", lens,
                          "--pixel-scale", "0.1", "-o", tmp_path / "p.fits")
    assert status == 0, err
    assert fits.getheader(tmp_path / "p.fits")["PIXSCALE"] == pytest.approx(0.05)


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["super-resolve", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--lens" in text and "SOURCE" in text and "bicubic" in text


def test_noise_sigma_moves_images_onto_their_data(tmp_path, models, capsys):
    """--noise-sigma 0: the super-resolved images sum back to the input exactly (noiseless data); a noise map:
    χ²/pixel of the summed images against the input ≤ 1; point-sampled models and bad noise are refused."""
    from sourcelens.lensing import data_consistency

    cube = _cube(2)
    path = _write(tmp_path / "cube.fits", cube)
    status, _, err = _run(capsys, "super-resolve", models / "supervised.pt", path, "-o", tmp_path / "a.fits",
                          "--noise-sigma", "0")
    assert status == 0, err
    out = fits.getdata(tmp_path / "a.fits").astype(float)
    np.testing.assert_allclose(out.reshape(2, N, 2, N, 2).sum((2, 4)), cube.astype(np.float32), rtol=1e-4, atol=1e-5)
    assert fits.getheader(tmp_path / "a.fits")["DATACONS"] is True
    plain = super_resolve(load_sisr(models / "supervised.pt"), cube.astype(np.float32), device=CPU)
    sigma = np.full(cube.shape[1:], 0.05)
    _write(tmp_path / "sigma.fits", sigma)
    status, _, err = _run(capsys, "super-resolve", models / "supervised.pt", path, "-o", tmp_path / "b.fits",
                          "--noise-sigma", tmp_path / "sigma.fits")
    assert status == 0, err
    expected, _ = data_consistency(plain, cube.astype(np.float32), sigma.astype(np.float32), 2)
    np.testing.assert_allclose(fits.getdata(tmp_path / "b.fits"), expected, rtol=1e-4, atol=1e-5)
    chi2 = np.mean(((fits.getdata(tmp_path / "b.fits").reshape(2, N, 2, N, 2).sum((2, 4)) - cube) / sigma) ** 2,
                   axis=(1, 2))
    assert np.all(chi2 <= 1 + 1e-3)
    # a model trained on point-sampled images (Model_I): its images are not moved (block sums do not apply)
    point = dict(GRID, supersampling=1, low_res_supersampling=1)
    save_sisr(SISR(FACTOR, width=4, depth=1), tmp_path / "point.pt", extra={"method": "supervised", "grid": point})
    status, _, err = _run(capsys, "super-resolve", tmp_path / "point.pt", path, "-o", tmp_path / "c.fits",
                          "--noise-sigma", "0")
    assert status == 0 and fits.getheader(tmp_path / "c.fits")["DATACONS"] is False, err
    np.testing.assert_allclose(fits.getdata(tmp_path / "c.fits"), super_resolve(
        load_sisr(tmp_path / "point.pt"), cube.astype(np.float32), device=CPU), rtol=1e-5, atol=1e-6)
    for argv, expected in (
            ([models / "supervised.pt", path, "--noise-sigma", "-1"], "must be finite and ≥ 0"),
            ([models / "supervised.pt", path, "--noise-sigma", "lots"], "neither a number nor a FITS file"),
            ([models / "supervised.pt", path, "--noise-sigma", _write(tmp_path / "s3.fits", np.ones((3, N, N)))],
             "does not match the images")):
        status, _, err = _run(capsys, "super-resolve", *argv, "-o", tmp_path / "bad.fits")
        assert status == 1 and expected in err, err
        assert not (tmp_path / "bad.fits").exists()
