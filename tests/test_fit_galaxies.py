"""Decoder fits (batched L-BFGS) and the Sérsic / shapelet baselines, against lenstronomy's profiles."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from torch.nn import functional as F

from conftest import blobs as _blobs

from sourcelens.fit import add_noise_to_level, fit_decoder, n_free_params, render
from sourcelens.fit.common import ImagingProblem
from sourcelens.fit.decoder import shift_zoom
from sourcelens.fit.profiles import fit_sersic, fit_sersic_shapelets, shapelet_basis, shapelet_n_params
from sourcelens.train import reference_latents

N = 32


@pytest.fixture(scope="module")
def vae(blob_vae):
    return blob_vae


@pytest.fixture(scope="module")
def truth(vae):
    """Four galaxies decoded from known latents (encoder means of new blobs), with small shifts,
    zooms and fluxes, plus 1 % noise."""
    rng = np.random.default_rng(0)
    with torch.no_grad():
        z = vae.encode(torch.from_numpy(_blobs(rng, 4))[:, None])[0]
        img = render(vae.decode(z), torch.tensor([1.0, 0.8, 1.2, 1.0]),
                     torch.tensor([[0.3, -0.2], [0.0, 0.4], [-0.5, 0.1], [0.0, 0.0]]),
                     torch.tensor([1.0, 1.05, 0.95, 1.0]))
    img = img.numpy().astype(np.float64)
    sigma = 0.01 * img.max(axis=(1, 2))
    data = img + rng.normal(0, 1, img.shape) * sigma[:, None, None]
    return z.numpy(), img, data, sigma


def test_render_identity_and_shift():
    rng = np.random.default_rng(1)
    dec = torch.from_numpy(rng.random((2, 1, 16, 16)).astype(np.float32))
    ones = torch.ones(2)
    same = render(dec, ones, torch.zeros(2, 2), ones)
    assert torch.allclose(same, dec[:, 0], atol=1e-6)
    moved = render(dec, 2 * ones, torch.tensor([[1.0, 0.0], [0.0, 2.0]]), ones)
    assert torch.allclose(moved[0, :, 1:], 2 * dec[0, 0, :, :-1], atol=1e-5)  # +1 pixel in x (columns)
    assert torch.allclose(moved[1, 2:, :], 2 * dec[1, 0, :-2, :], atol=1e-5)  # +2 pixels in y (rows)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shape", [(12, 16), (16, 16)])
def test_shift_zoom_equals_grid_sample_with_the_same_affine_map(interpolation, shape):
    """The separable matrix resampling against torch's grid_sample (an independent implementation),
    values and gradients, for shifts beyond the edge and zooms both ways."""
    gen = torch.Generator().manual_seed(2)
    img = torch.rand(5, *shape, generator=gen, dtype=torch.float64, requires_grad=True)
    offset = torch.tensor([[0.0, 0.0], [0.37, -1.6], [-3.2, 2.5], [7.9, 0.1], [1.0, 1.0]], dtype=torch.float64,
                          requires_grad=True)
    scale = torch.tensor([1.0, 1.3, 0.7, 1.0, 2.1], dtype=torch.float64, requires_grad=True)
    ours = shift_zoom(img, offset, scale, interpolation)
    b, h, w = img.shape
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta = theta / scale[:, None, None]                       # output → input: x_in = (x_out − 2Δ/W) / s
    theta = theta.clone()
    theta[:, 0, 2] = -2.0 * offset[:, 0] / w / scale
    theta[:, 1, 2] = -2.0 * offset[:, 1] / h / scale
    grid = F.affine_grid(theta, (b, 1, h, w), align_corners=False)
    ref = F.grid_sample(img[:, None], grid, mode=interpolation, padding_mode="zeros", align_corners=False)[:, 0]
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    weights = torch.rand(b, h, w, generator=gen, dtype=torch.float64)
    g_ours = torch.autograd.grad((ours * weights).sum(), (img, offset, scale))
    g_ref = torch.autograd.grad((ref * weights).sum(), (img, offset, scale))
    # bilinear has kinks at whole-pixel positions: galaxy 0 (the identity) sits on them, where the
    # derivative in Δ and s is one-sided and either side is right
    keep = slice(None) if interpolation == "bicubic" else slice(1, None)
    for a, r in zip(g_ours, g_ref):
        torch.testing.assert_close(a[keep], r[keep], rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="interpolation"):
        shift_zoom(img, offset, scale, "nearest")


@pytest.mark.parametrize("init", ["prior", "encoder"])
def test_decoder_fit_recovers_known_latent(vae, init):
    rng = np.random.default_rng(7)
    z = rng.normal(0, 0.5, (4, 6)).astype(np.float32)
    flux, offset = np.array([1.0, 0.8, 1.2, 1.0]), np.array([[0.3, -0.2], [0.0, 0.4], [-0.5, 0.1], [0.0, 0.0]])
    with torch.no_grad():
        img = render(vae.decode(torch.from_numpy(z)), torch.tensor(flux, dtype=torch.float32),
                     torch.tensor(offset, dtype=torch.float32), torch.ones(4))
    img = img.numpy().astype(np.float64)
    sigma = 0.01 * img.max(axis=(1, 2))
    data = img + rng.normal(0, 1, img.shape) * sigma[:, None, None]
    fit = fit_decoder(vae, data, sigma, init=init, max_iter=300)
    assert fit.n_params == n_free_params(6) == 10
    assert fit.model.shape == data.shape and fit.chi2.shape == (4,)
    # the model matches the noiseless truth to well within the noise, χ²/ν ≈ 1, and the parameters
    # come back: latents to a few hundredths of the prior width, flux to 1 %, offsets to 0.02 pixel
    rms = np.sqrt(np.mean((fit.model - img) ** 2, axis=(1, 2)))
    assert np.all(rms < 0.3 * sigma), rms / sigma
    assert np.all(np.abs(fit.chi2_nu - 1) < 0.15), fit.chi2_nu
    assert np.abs(fit.z - z).max() < 0.1, np.abs(fit.z - z).max(1)
    np.testing.assert_allclose(fit.flux, flux, rtol=0.01)
    np.testing.assert_allclose(fit.offset, offset, atol=0.02)
    np.testing.assert_allclose(fit.scale, 1.0, atol=0.01)
    assert np.all(fit.seconds > 0) and np.all(fit.n_iter >= 1) and set(fit.status) <= {"change", "gradient"}


def test_batch_and_single_fits_agree(vae, truth):
    _, _, data, sigma = truth
    batch = fit_decoder(vae, data, sigma, init="encoder", max_iter=300)
    assert np.all(np.abs(batch.chi2_nu - 1) < 0.2), batch.chi2_nu
    single = [fit_decoder(vae, data[i:i + 1], sigma[i], init="encoder", max_iter=300) for i in range(len(data))]
    chi2_single = np.array([s.chi2[0] for s in single])
    np.testing.assert_allclose(batch.chi2, chi2_single, rtol=0.01)
    for i, s in enumerate(single):
        assert np.max(np.abs(batch.model[i] - s.model[0])) < 0.5 * sigma[i]
    # chunked batches give the same fits as one batch of the same size
    chunked = fit_decoder(vae, data, sigma, init="encoder", max_iter=300, batch_size=2)
    np.testing.assert_allclose(chunked.chi2, batch.chi2, rtol=0.01)


def test_reference_latents_make_a_fit_independent_of_its_batch(vae, truth):
    """With the model's reference latents the preconditioner is the model's, scaled per galaxy: a galaxy
    follows the same path alone, in any batch and any chunking (float64: up to reduction order)."""
    model = copy.deepcopy(vae).double()
    blobs = torch.from_numpy(_blobs(np.random.default_rng(11), 64)).double()[:, None]
    model.reference_latents = reference_latents(model, blobs, n=16)
    assert model.reference_latents.shape == (16, 6)
    z, img, data, sigma = truth
    crowd = np.concatenate([data, data[::-1] * 0.7])            # other galaxies in the batch
    batch = fit_decoder(model, crowd, np.concatenate([sigma, sigma[::-1] * 0.7]), max_iter=300,
                        dtype=torch.float64)
    assert batch.preconditioner == "reference"
    assert np.all(np.abs(batch.chi2_nu[:4] - 1) < 0.2), batch.chi2_nu
    chunked = fit_decoder(model, data, sigma, max_iter=300, dtype=torch.float64, batch_size=3, chunk_size=2)
    for i in range(len(data)):
        alone = fit_decoder(model, data[i:i + 1], sigma[i], max_iter=300, dtype=torch.float64)
        for other in (batch, chunked):
            assert other.n_eval[i] == alone.n_eval[0]
            np.testing.assert_allclose(other.chi2[i], alone.chi2[0], rtol=1e-9)
            np.testing.assert_allclose(other.z[i], alone.z[0], atol=1e-6)
    # without reference latents (or through a lens) the preconditioner is the batch's
    assert fit_decoder(vae, data[:2], sigma[:2], max_iter=5).preconditioner == "batch"
    assert fit_decoder(model, data[:2], sigma[:2], max_iter=5, precondition=False).preconditioner == "none"


def test_add_noise_to_level():
    rng = np.random.default_rng(2)
    images = np.zeros((3, 64, 64))
    noisy, total = add_noise_to_level(images, [0.0, 0.01, 0.05], 0.02, rng)
    np.testing.assert_allclose(total, [0.02, 0.02, 0.05])
    np.testing.assert_allclose(noisy.std(axis=(1, 2)), [0.02, np.sqrt(0.02**2 - 0.01**2), 0.0], atol=1.5e-3)


def _sersic_image(n=64, **kw):
    from lenstronomy.LightModel.light_model import LightModel

    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    return LightModel(["SERSIC_ELLIPSE"]).surface_brightness(x.ravel(), y.ravel(), [kw]).reshape(n, n)


def test_sersic_recovers_parameters():
    """lenstronomy's SERSIC_ELLIPSE drawn, noise added, the torch fitter gets its parameters back (two galaxies
    at once: each has its own L-BFGS)."""
    true = dict(amp=1.0, R_sersic=6.0, n_sersic=2.5, e1=0.2, e2=-0.1, center_x=1.3, center_y=-0.7)
    img = _sersic_image(**true)
    img /= img.max()
    sigma = 0.005
    rng = np.random.default_rng(1)
    data = np.stack([img + rng.normal(0, sigma, img.shape) for _ in range(2)])
    fit = fit_sersic(ImagingProblem.unlensed(data, sigma))
    p = fit.info["params"]
    np.testing.assert_allclose(p["R_sersic"], 6.0, rtol=0.05)
    np.testing.assert_allclose(p["n_sersic"], 2.5, rtol=0.05)
    np.testing.assert_allclose(p["e1"], 0.2, atol=0.02)
    np.testing.assert_allclose(p["e2"], -0.1, atol=0.02)
    np.testing.assert_allclose(p["center_x"], 1.3, atol=0.03)
    np.testing.assert_allclose(p["center_y"], -0.7, atol=0.03)
    assert fit.n_params == 7
    np.testing.assert_allclose(fit.chi2 / (img.size - 7), 1.0, atol=0.06)
    # the model is the amplitude times lenstronomy's profile at the fitted parameters
    kw = {k: float(v[0]) for k, v in p.items()}
    np.testing.assert_allclose(fit.model[0], _sersic_image(**kw), rtol=1e-6, atol=1e-9)


def test_shapelet_basis_is_lenstronomys_divided_by_beta():
    from lenstronomy.LightModel.Profiles.shapelets import ShapeletSet

    n_max, beta, cx, cy = 6, 2.3, 0.4, -0.7
    y, x = np.mgrid[:24, :24] - 11.5
    ours = shapelet_basis(torch.as_tensor(x), torch.as_tensor(y), n_max, beta, cx, cy).numpy()
    theirs = ShapeletSet().function_split(x.ravel(), y.ravel(), np.ones(shapelet_n_params(n_max)), n_max, beta,
                                          cx, cy)
    assert ours.shape == (shapelet_n_params(n_max), 24, 24) == (len(theirs), 24, 24)
    for k, ref in enumerate(theirs):
        np.testing.assert_allclose(ours[k] * beta, ref.reshape(24, 24), rtol=1e-9, atol=1e-12)
    # orthonormal on the sky: on a fine grid the Gram matrix is the identity
    c = torch.linspace(-18, 18, 721, dtype=torch.float64)
    fy, fx = torch.meshgrid(c, c, indexing="ij")
    b = shapelet_basis(fx, fy, n_max, beta).reshape(shapelet_n_params(n_max), -1)
    np.testing.assert_allclose((b @ b.T * (c[1] - c[0]) ** 2).numpy(), np.eye(len(b)), atol=1e-6)


def test_shapelets_reduce_chi2():
    import galsim

    gal = (galsim.Sersic(n=1.5, half_light_radius=5.0).shear(g1=0.2, g2=0.1)
           + galsim.Gaussian(sigma=1.5, flux=0.15).shift(5, 3))
    img = gal.drawImage(nx=64, ny=64, scale=1.0).array.astype(float)
    img /= img.max()
    sigma = 0.01
    data = img + np.random.default_rng(4).normal(0, sigma, img.shape)
    problem = ImagingProblem.unlensed(data, sigma)
    sersic = fit_sersic(problem)
    chi2 = [sersic.chi2[0]]
    for n_max in (8, 20):
        fit = fit_sersic_shapelets(problem, sersic, n_max)
        assert fit.n_params == 7 + shapelet_n_params(n_max) + 1 == 8 + (n_max + 1) * (n_max + 2) // 2
        chi2.append(fit.chi2[0])
    assert chi2[1] < 0.8 * chi2[0] and chi2[2] < chi2[1], chi2
    # with the clump explained, the residual is the noise
    assert chi2[2] / (img.size - fit.n_params) < 1.1
