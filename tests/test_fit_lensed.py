"""Lensed source fits (sourcelens.fit.lensed, .scenes, .pixelated): sparse normal equations, the torch
operator against lenstronomy's image, pixelated and decoder recovery on tiny grids, and the per-method table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sourcelens.config import validate_config
from sourcelens.fit import lensed as L
from sourcelens.fit import pixelated as P
from sourcelens.fit import scenes as S
from sourcelens.lensing import BilinearLensingOperator, LensingSimulator, pixelated
from sourcelens.models.vae import VAE

STAMP = 16


def _pairs_cfg(**noise) -> dict:
    cfg = validate_config({"simulate": {"pairs": {
        "num_pix": 24, "pixel_scale_arcsec": 0.1, "source_pixel_scale_arcsec": 0.05, "supersampling": 2,
        "source_taper_fraction": 0.0,
        "psf": {"type": "GAUSSIAN", "fwhm_arcsec": 0.15},
        "noise": {"background_rms": 0.01, "poisson": False, **noise},
        "source_offset_arcsec": 0.0, "source_magnitude": [21.0, 21.0],
        "priors": {"theta_E": {"uniform": [0.45, 0.55]}},
    }}})
    return cfg["simulate"]["pairs"]


def _smooth_stamps(n: int) -> np.ndarray:
    yy, xx = np.indices((STAMP, STAMP)) - (STAMP - 1) / 2
    out = []
    for i in range(n):
        q = 0.6 + 0.15 * i
        out.append(np.exp(-(xx**2 + (yy / q) ** 2) / (2 * 2.2**2)))
    return np.stack(out)


@pytest.fixture(scope="module")
def small_vae():
    torch.manual_seed(3)
    return VAE(image_size=STAMP, latent_dim=4, widths=(8, 16)).eval()


def test_sparse_normal_equations_match_dense_solve():
    torch.manual_seed(0)
    k = torch.tensor([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]], dtype=torch.float64)
    sim = LensingSimulator(n_pix=10, pixel_scale=0.1, supersample=2, psf=k, downsample=2, dtype=torch.float64)
    kw = [{"theta_E": 0.3, "e1": 0.1, "e2": -0.05, "center_x": 0.0, "center_y": 0.0},
          {"gamma1": 0.02, "gamma2": 0.01, "ra_0": 0.0, "dec_0": 0.0}]
    m = 6
    op = BilinearLensingOperator(sim, ["SIE", "SHEAR"], kw, (m, m), 0.06)
    eye = torch.eye(m * m, dtype=torch.float64).reshape(m * m, m, m)
    dense_l = op.apply(eye).reshape(m * m, -1).T                     # (pixels, source pixels)
    sigma = 0.5 + torch.rand(5, 5, dtype=torch.float64)
    data = torch.randn(5, 5, dtype=torch.float64)
    n_inv = torch.diag(1 / sigma.reshape(-1) ** 2)
    for kind in ("gradient", "curvature"):
        rtr = P.regulariser_rtr(eye, kind).reshape(m * m, -1).T
        assert torch.allclose(rtr, rtr.T)                             # RᵀR is symmetric
        lam = 0.7
        a_dense = dense_l.T @ n_inv @ dense_l + lam * rtr
        # the matrix-free normal operator equals the dense one, column by column
        a_op = torch.stack([P.normal_operator(op, sigma, lam, kind)(e).reshape(-1) for e in eye], 1)
        assert torch.allclose(a_op, a_dense, atol=1e-10)
        # solve_pixelated scales lambda by the median data curvature: undo it for the comparison
        s, info = P.solve_pixelated(op, data, sigma, 1.0, kind, tol=1e-12, max_iter=5000)
        lam_eff = info["lambda_eff"]
        a_dense = dense_l.T @ n_inv @ dense_l + lam_eff * rtr
        expected = torch.linalg.solve(a_dense, dense_l.T @ n_inv @ data.reshape(-1))
        assert torch.allclose(s.reshape(-1), expected, atol=1e-7 * float(expected.abs().max()))


def test_torch_operator_reproduces_lenstronomy_image():
    """The fitting problem's forward model (torch rays, bilinear source, PSF, binning) gives lenstronomy's
    noiseless image of the scene (INTERPOL source, same lens, grid and PSF)."""
    scenes = S.simulate_lensed(_smooth_stamps(2), _pairs_cfg(), np.random.default_rng(1))
    problem = S.imaging_problem(scenes)
    stamp = torch.as_tensor(scenes.true_source_image(), dtype=torch.float64)
    xy = torch.as_tensor(scenes.source_xy)
    scale = torch.as_tensor(scenes.source_pixel_scale)[:, None, None]
    image = problem.image(pixelated(*problem.rays_of(), stamp, scale, xy[:, 0], xy[:, 1]))
    peak = scenes.noiseless.max()
    np.testing.assert_allclose(image.numpy(), scenes.noiseless, atol=2e-3 * peak)


def test_pixelated_fit_recovers_noiseless_smooth_source():
    scenes = S.simulate_lensed(_smooth_stamps(1), _pairs_cfg(), np.random.default_rng(1))
    assert np.abs(scenes.data - scenes.noiseless).max() > 0
    scenes.data = scenes.noiseless.copy()                             # noiseless data
    res = P.fit_pixelated(scenes, regularisation=1e-4)
    truth = S.true_source_on_grid(scenes)[0]
    mask = res.info["covered"][0]
    assert mask.mean() > 0.5
    err = np.abs(res.source[0] - truth)[mask].max() / truth.max()
    assert err < 0.03, err
    assert res.chi2[0] / scenes.data[0].size < 1e-2


@pytest.mark.parametrize("init", ["prior", "encoder"])
def test_decoder_lensed_fit_recovers_known_latent(blob_vae, init):
    """fit_decoder through a lens (its `forward` path): latents, flux, centre and zoom of two decoded galaxies of
    different sizes on the sky come back from their noiseless lensed images, from the prior or the encoder,
    started off centre."""
    z_true = np.random.default_rng(7).normal(0, 0.5, (2, 6)).astype(np.float32)
    with torch.no_grad():
        stamps = blob_vae.decode(torch.from_numpy(z_true))[:, 0].double().numpy()
    cfg = _pairs_cfg(background_rms=1e-3)
    cfg["source_pixel_scale_arcsec"] = None                           # each stamp's own scale: 0.8" and 0.64"
    scenes = S.simulate_lensed(stamps, cfg, np.random.default_rng(2), pixel_scales=[0.025, 0.02])
    np.testing.assert_allclose(scenes.source_pixel_scale, [0.025, 0.02])
    scenes.data = scenes.noiseless.copy()
    problem = S.imaging_problem(scenes)
    start = S.true_source_on_grid(scenes) if init == "encoder" else None
    res = L.fit_decoder_lensed(blob_vae, problem, start, max_iter=300, init=init, prior_weight=0.0,
                               tolerance_change=1e-9, centre0=np.array([[0.02, -0.02], [-0.015, 0.01]]))
    np.testing.assert_allclose(res.info["z"], z_true, atol=1e-3)
    np.testing.assert_allclose(res.info["center"], 0.0, atol=1e-4)
    np.testing.assert_allclose(res.info["scale"], 1.0, atol=1e-4)
    np.testing.assert_allclose(res.info["flux"], scenes.source_flux / stamps.sum((1, 2)), rtol=1e-4)
    assert res.info["preconditioner"] == "batch" and res.n_params == 6 + 4
    assert (res.chi2 / scenes.data[0].size < 1e-4).all()
    # the source on the evaluation grid is the true one
    truth = S.true_source_on_grid(scenes)
    assert np.abs(res.source - truth).max() < 1e-3 * truth.max()


def test_fit_lensed_all_table_has_every_method(small_vae):
    cfg = _pairs_cfg()
    cfg["source_offset_arcsec"] = {"uniform": [-0.05, 0.05]}
    scenes = S.simulate_lensed(_smooth_stamps(2), cfg, np.random.default_rng(4), source_ids=["a", "b"],
                               kinds=["parametric", "cosmos"])
    fits, metrics = L.fit_lensed_all(scenes, small_vae, regularisation=1.0, max_iter=15, shapelet_n_max=(2, 4))
    expected = ["decoder", "sersic", "sersic+shapelets2", "sersic+shapelets4", "pixelated"]
    assert list(fits) == expected
    assert len(metrics) == 2 * len(expected)
    assert set(metrics["source_id"]) == {"a", "b"} and set(metrics["kind"]) == {"parametric", "cosmos"}
    for col in ("chi2_nu", "source_mse", "source_ssim", "seconds"):
        assert np.isfinite(metrics[col]).all(), col
    table = L.summary_table(metrics)
    # per kind, real galaxies first (here one each of two kinds), then all
    assert table["kind"].tolist() == ["cosmos"] * 5 + ["parametric"] * 5 + ["all"] * 5
    assert table["method"].tolist() == expected * 3
    assert (table["n_galaxies"] == [1] * 10 + [2] * 5).all()
    for col in ("chi2_nu_mean", "chi2_nu_median", "source_mse_mean", "source_ssim_median", "seconds_mean"):
        assert col in table
    # the linear Sérsic + shapelet solve contains the Sérsic fit (coefficients 1, 0, ...), so it is no worse
    for i in range(2):
        assert fits["sersic+shapelets4"].chi2[i] <= fits["sersic"].chi2[i] * (1 + 1e-9)
    for res in fits.values():
        assert res.model.shape == scenes.data.shape and res.source.shape == scenes.stamps.shape
    # every method that starts from the pixelated source is charged its time
    assert (fits["decoder"].seconds > fits["pixelated"].seconds).all()
    assert L.median_galaxy(metrics) in (0, 1)


def test_source_metrics_normalisation():
    rng = np.random.default_rng(0)
    t = rng.random((16, 16)) + 0.1
    mse, ssim = L.source_metrics(t, 3.0 * t)                        # flux scale does not matter
    assert mse == pytest.approx(0.0, abs=1e-15) and ssim == pytest.approx(1.0)
    assert np.isnan(L.source_metrics(t, -t)[0])
