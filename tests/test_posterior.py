"""Posteriors of decoder fits (sourcelens.fit.posterior): calibrated where the model is exact, NUTS agreeing with
the Laplace approximation, uncertainties scaling with the noise, reproducible, and bad input refused."""
import numpy as np
import pytest
import torch

from sourcelens.evaluate.posterior import coverage_rows, coverage_summary, model_galaxies
from sourcelens.fit.decoder import fit_decoder
from sourcelens.fit.posterior import decoder_posterior, laplace_posterior, nuts_posterior, parameters


def _fitted(vae, n, noise, seed):
    """Galaxies drawn from the decoder, fitted from their true parameters (the posterior at the global optimum,
    not the optimiser's local minima, is under test here)."""
    data, sigma, truth, q_true = model_galaxies(vae, n, noise, np.random.default_rng(seed))
    fit = fit_decoder(vae, data, sigma, max_iter=300, z0=q_true[:, :6], offset0=q_true[:, 7:9],
                      scale0=np.exp(q_true[:, 9]))
    return data, sigma, truth, parameters(fit.z, fit.flux, fit.offset, fit.scale)


@pytest.fixture(scope="module")
def drawn(blob_vae):
    """24 galaxies drawn from the blob VAE's decoder with 5 % noise, fitted."""
    return _fitted(blob_vae, 24, 0.05, 11)


def test_laplace_is_calibrated_where_the_model_is_exact(blob_vae, drawn):
    data, sigma, truth, q = drawn
    post = laplace_posterior(blob_vae, data, sigma, q, n_samples=300, levels=(0.68, 0.95), seed=1)
    assert post.source_mean.shape == post.source_std.shape == data.shape == post.model_std.shape
    mask = truth >= 0.05 * truth.max(axis=(1, 2), keepdims=True)
    cov = post.coverage(truth, mask)
    assert 0.60 < cov[0.68].mean() < 0.76, cov[0.68].mean()
    assert 0.90 < cov[0.95].mean() < 0.985, cov[0.95].mean()
    # the table's z_rms is ≈ 1 and the summary leads with the set and keeps both levels
    per = coverage_rows(post, truth, __import__("pandas").DataFrame({"kind": ["decoder"] * len(truth)}), "model")
    assert 0.8 < per["z_rms"].median() < 1.25
    summary = coverage_summary(per)
    assert list(summary["level"]) == [0.68, 0.95] and (summary["galaxies"] == len(truth)).all()


def test_a_worse_model_under_covers(blob_vae, drawn):
    """Against a truth the decoder cannot draw (the noiseless galaxy shifted by half a pixel after the fit), the
    intervals cover much less than nominal: the test can fail."""
    data, sigma, truth, q = drawn
    post = laplace_posterior(blob_vae, data, sigma, q, n_samples=100, levels=(0.68,), seed=1)
    shifted = np.roll(truth, 1, axis=2)
    mask = truth >= 0.05 * truth.max(axis=(1, 2), keepdims=True)
    assert post.coverage(shifted, mask)[0.68].mean() < 0.4


def test_uncertainty_scales_with_the_noise(blob_vae):
    data, sigma, truth, q = _fitted(blob_vae, 4, 0.02, 3)
    a = laplace_posterior(blob_vae, data, sigma, q, n_samples=400, seed=2)
    b = laplace_posterior(blob_vae, data, sigma / 2, q, n_samples=400, seed=2)
    ratio = np.median(a.parameter_std / b.parameter_std)
    assert ratio == pytest.approx(2.0, rel=0.05)
    mask = truth >= 0.2 * truth.max(axis=(1, 2), keepdims=True)
    assert np.median(a.source_std[mask] / b.source_std[mask]) == pytest.approx(2.0, rel=0.15)


def test_nuts_agrees_with_laplace_at_high_signal_to_noise(blob_vae, drawn):
    data, sigma, truth, q = drawn
    lap = laplace_posterior(blob_vae, data[:1], sigma[:1], q[:1], n_samples=400, seed=3)
    nuts = nuts_posterior(blob_vae, data[:1], sigma[:1], q[:1], n_samples=150, warmup=100, seed=3)
    ratio = nuts.parameter_std / lap.parameter_std
    assert 0.75 < np.median(ratio) < 1.3, ratio
    assert nuts.diagnostics["divergences"][0] == 0
    rel = np.abs(nuts.source_mean - lap.source_mean).max() / truth[0].max()
    assert rel < 0.05


def test_draws_are_reproducible_and_independent_of_the_batch(blob_vae, drawn):
    data, sigma, _, q = drawn
    all3 = laplace_posterior(blob_vae, data[:3], sigma[:3], q[:3], n_samples=50, seed=7)
    one = laplace_posterior(blob_vae, data[1:2], sigma[1:2], q[1:2], n_samples=50, seed=7)
    # galaxy 1 alone draws with the generator of galaxy 0: compare galaxy 0 to galaxy 0 instead
    first = laplace_posterior(blob_vae, data[:1], sigma[:1], q[:1], n_samples=50, seed=7)
    np.testing.assert_allclose(first.source_std[0], all3.source_std[0], rtol=1e-5, atol=1e-9)
    assert not np.allclose(one.source_std[0], all3.source_std[0])   # a different galaxy
    again = laplace_posterior(blob_vae, data[:3], sigma[:3], q[:3], n_samples=50, seed=7)
    np.testing.assert_array_equal(again.source_mean, all3.source_mean)


def test_a_linear_forward_operator_carries_the_samples(blob_vae, drawn):
    """Through a linear ``forward`` (2×2 binning), the model mean is the binned source mean (same draws)."""
    data, sigma, _, q = drawn

    def forward(source, index):
        return torch.nn.functional.avg_pool2d(source[:, None], 2)[:, 0] * 4

    binned = torch.nn.functional.avg_pool2d(torch.as_tensor(data[:2])[:, None], 2)[:, 0].numpy() * 4
    post = laplace_posterior(blob_vae, binned, 2 * sigma[:2], q[:2], forward=forward, n_samples=40, seed=0)
    assert post.model_mean.shape == binned.shape and post.source_mean.shape == data[:2].shape
    expect = forward(torch.as_tensor(post.source_mean), None).numpy()
    np.testing.assert_allclose(post.model_mean, expect, rtol=1e-4, atol=1e-6 * np.abs(expect).max())


def test_bad_input_is_refused(blob_vae, drawn):
    data, sigma, _, q = drawn
    bad = data[:2].copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        laplace_posterior(blob_vae, bad, sigma[:2], q[:2])
    with pytest.raises(ValueError, match="non-positive flux"):
        parameters(np.zeros((1, 6)), np.array([-1.0]), np.zeros((1, 2)), np.ones(1))
    with pytest.raises(ValueError, match="levels"):
        laplace_posterior(blob_vae, data[:1], sigma[:1], q[:1], levels=(1.2,))
    with pytest.raises(ValueError, match="3 fitted parameter sets for 2 images"):
        laplace_posterior(blob_vae, data[:2], sigma[:2], q[:3])
    with pytest.raises(ValueError, match="posterior method"):
        decoder_posterior("mcmc", blob_vae, data[:1], sigma[:1], q[:1])
