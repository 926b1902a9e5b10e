"""VAE training: model shapes, gradients, losses (SSIM against scikit-image), a tiny overfit, and
train_vae end to end on tiny synthetic stamps files, including resuming after an interruption."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from sourcelens.io import write_dataset
from sourcelens.fit.decoder import reference_metric
from sourcelens.models.vae import VAE, load_vae
from sourcelens.plots import learning_curve
from sourcelens.metrics import ssim_torch
from sourcelens.train import (METRIC_COLUMNS, PROGRESS_FILE, RECON_LOSSES, VAEModule, init_output_bias,
                              reconstruction_loss, train_vae)


def _blobs(n, size, seed=0):
    """Peak-normalised elliptical Gaussian galaxies of random size, axis ratio and angle."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        s, q, a = rng.uniform(0.08, 0.2) * size, rng.uniform(0.4, 1), rng.uniform(0, np.pi)
        u, v = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
        out[i] = np.exp(-0.5 * (u**2 + (v / q) ** 2) / s**2)
    return out


def _stamps_file(path, n, size, seed, noise=0.0):
    rng = np.random.default_rng(seed)
    images = _blobs(n, size, seed)
    sigma = np.where(np.arange(n) % 2 == 0, noise, 0.0)
    images = images + rng.normal(size=images.shape).astype(np.float32) * sigma[:, None, None].astype(np.float32)
    meta = pd.DataFrame({"source_id": [f"g{seed}_{i}" for i in range(n)], "kind": "parametric",
                         "noise_sigma": sigma, "augmentation": "none"})
    return write_dataset(path, {"images": images}, meta, kind="stamps")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is faster, and robust to other jobs on shared cores (no OpenMP spin-waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {"latent_dim": 4, "widths": [4, 8], "batch_size": 8, "accelerator": "cpu"}


@pytest.mark.parametrize("size,latent,widths", [(16, 2, (4, 8)), (32, 8, (8, 16, 32)), (64, 16, (4, 8, 16, 32))])
def test_model_shapes(size, latent, widths):
    model = VAE(size, latent, widths)
    x = torch.rand(3, 1, size, size)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, latent)
    assert model.decode(torch.randn(5, latent)).shape == (5, 1, size, size)
    recon, mu2, _ = model(x)
    assert recon.shape == x.shape and (recon >= 0).all() and mu2.shape == (3, latent)
    assert VAE.kl_divergence(mu, logvar).shape == (3,)
    with pytest.raises(ValueError, match="divisible"):
        VAE(size + 2, latent, widths)


@pytest.mark.parametrize("widths,channels", [((8, 16, 32), 1), ((4, 8), 3)])
def test_fused_decoder_is_the_decoder(widths, channels):
    """Batch norm folded, channels-last, phase-convolution output: the same function as decode(),
    values and latent gradients, with non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = VAE(image_size=16, latent_dim=5, widths=widths, in_channels=channels)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    model = model.double().eval()
    fused = model.fused_decoder()
    z = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    ref = model.decode(z)
    out = fused(z)
    assert out.shape == ref.shape == (7, channels, 16, 16)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.rand_like(ref)
    torch.testing.assert_close(torch.autograd.grad((out * w).sum(), z)[0], torch.autograd.grad((ref * w).sum(), z)[0],
                               rtol=1e-12, atol=1e-12)
    assert not any(p.requires_grad for p in fused.parameters()) and len(list(fused.buffers())) > 0


@pytest.mark.parametrize("loss", RECON_LOSSES)
def test_gradient_reaches_every_parameter(loss):
    torch.manual_seed(0)
    module = VAEModule(VAE(16, 4, (4, 8)), loss=loss, beta=0.01)
    x = torch.from_numpy(_blobs(4, 16)).unsqueeze(1)
    out = module.compute_loss(x, torch.tensor([0.0, 0.01, 0.0, 0.02]))
    out["loss"].backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_reconstruction_losses_are_per_object_sums():
    x, y = torch.zeros(2, 1, 16, 16), torch.full((2, 1, 16, 16), 0.1)
    y[1] = 0.2
    assert torch.allclose(reconstruction_loss(y, x, "mse"), torch.tensor([256 * 0.01, 256 * 0.04]))
    assert torch.allclose(reconstruction_loss(y, x, "mae"), torch.tensor([256 * 0.1, 256 * 0.2]))
    chi2 = reconstruction_loss(y, x, "chi2", torch.tensor([0.0, 0.1]), sigma_floor=1e-2)
    assert torch.allclose(chi2, torch.tensor([256 * 100.0, 256 * 4.0]))  # noiseless stamp: floor 1e-2
    assert torch.allclose(reconstruction_loss(x, x, "ssim_mae"), torch.zeros(2), atol=1e-5)
    with pytest.raises(ValueError, match="unknown"):
        reconstruction_loss(x, x, "l3")


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    clean = _blobs(4, 32, seed=1).astype(np.float64)
    noisy = clean + rng.normal(scale=[[[0.01]], [[0.05]], [[0.2]], [[0.0]]], size=clean.shape)
    other = _blobs(4, 32, seed=2).astype(np.float64)
    for a, b in ((clean, noisy), (clean, other), (noisy, np.roll(clean, 3, axis=-1))):
        ours = ssim_torch(torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None]).numpy()
        ref = [structural_similarity(a[i], b[i], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False) for i in range(len(a))]
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-8)
    x = torch.from_numpy(noisy[:2, None]).float().requires_grad_()
    value = ssim_torch(x, torch.from_numpy(clean[:2, None]).float()).sum()
    value.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_overfits_a_tiny_batch():
    torch.manual_seed(1)
    x = torch.from_numpy(_blobs(8, 16, seed=4)).unsqueeze(1)
    model = VAE(16, 8, (8, 16))
    init_output_bias(model, float(x.mean()))  # start from the mean level: the drop below is real learning
    module = VAEModule(model, loss="mse", beta=1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def eval_mse():
        model.eval()
        with torch.no_grad():
            mse = torch.mean((model(x)[0] - x) ** 2).item()
        model.train()
        return mse

    before = eval_mse()
    for _ in range(200):
        opt.zero_grad()
        module.compute_loss(x)["loss"].backward()
        opt.step()
    after = eval_mse()
    assert after < before / 10, (before, after)


@pytest.fixture
def stamps(tmp_path):
    return (_stamps_file(tmp_path / "train.h5", 24, 16, seed=1, noise=0.02),
            _stamps_file(tmp_path / "val.h5", 8, 16, seed=2, noise=0.02))


def test_train_vae_writes_model_and_metrics(stamps, tmp_path):
    cfg = TINY | {"stages": [{"loss": "mae", "epochs": 1}, {"loss": "chi2", "epochs": 1}]}
    out = tmp_path / "out"
    model = train_vae(*stamps, cfg, out / "vae.pt", out / "metrics.csv", out / "ckpt", seed=5,
                      provenance={"rule": "test"})
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert metrics[["stage", "epoch"]].values.tolist() == [[1, 0], [2, 0]]
    assert list(metrics["loss"]) == ["mae", "chi2"]
    assert np.isfinite(metrics.drop(columns="loss").to_numpy(dtype=float)).all()
    loaded = load_vae(out / "vae.pt")
    assert loaded.hparams == {"image_size": 16, "latent_dim": 4, "widths": [4, 8], "in_channels": 1}
    assert loaded.provenance == {"rule": "test"}
    # the encoder means of evenly spaced training stamps travel with the model (decoder-fit preconditioning)
    assert loaded.reference_latents.shape == (24, 4)
    torch.testing.assert_close(loaded.reference_latents, model.reference_latents)
    # ... with the decoder's metric there: fits of the loaded model use it without recomputing it
    assert len(loaded.reference_metrics) == 1
    saved = next(iter(loaded.reference_metrics.values()))
    assert saved.shape == (4 + 3, 4 + 3) and reference_metric(loaded) is saved
    summary = loaded.extra["training"]
    assert summary["n_train"] == 24 and [s["loss"] for s in summary["stages"]] == ["mae", "chi2"]
    assert summary["final_val_loss"] == pytest.approx(metrics["val_loss"].iloc[-1], rel=1e-5)
    x = torch.from_numpy(_blobs(2, 16)).unsqueeze(1)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[0], model(x)[0])
    progress = json.loads((out / "ckpt" / PROGRESS_FILE).read_text())
    assert sorted(progress["finished"]) == ["stage1_mae", "stage2_chi2"]
    assert not torch.are_deterministic_algorithms_enabled()  # the process-wide setting is restored
    learning_curve(metrics)


def test_train_vae_resumes_after_interruption(stamps, tmp_path, monkeypatch):
    cfg = TINY | {"stages": [{"loss": "mae", "epochs": 1}, {"loss": "mse", "epochs": 3}]}
    out, ckpt = tmp_path / "out", tmp_path / "out" / "ckpt"
    args = (*stamps, cfg, out / "vae.pt", out / "metrics.csv", ckpt)

    def interrupt(self):  # after the stage-2 epoch-0 checkpoint, during epoch 1
        if self.loss_kind == "mse" and self.current_epoch == 1:
            raise RuntimeError("simulated interruption")

    monkeypatch.setattr(VAEModule, "on_train_epoch_end", interrupt)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        train_vae(*args, seed=5)
    monkeypatch.undo()
    assert not (out / "vae.pt").exists() and not (out / "metrics.csv").exists()
    assert list(json.loads((ckpt / PROGRESS_FILE).read_text())["finished"]) == ["stage1_mae"]
    assert (ckpt / "stage2_mse" / "last.ckpt").is_file()
    stage1_best = (ckpt / "stage1_mae" / "best.ckpt").stat().st_mtime_ns

    model = train_vae(*args, seed=5)
    stages = model.extra["training"]["stages"]
    assert [(s["skipped"], s["resumed"]) for s in stages] == [(True, False), (False, True)]
    assert (ckpt / "stage1_mae" / "best.ckpt").stat().st_mtime_ns == stage1_best
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics[["stage", "epoch"]].values.tolist() == [[1, 0], [2, 0], [2, 1], [2, 2]]
    assert load_vae(out / "vae.pt").extra["training"]["stages"][1]["epochs_run"] == 3

    # everything finished: a rerun trains nothing; other settings start afresh
    again = train_vae(*args, seed=5)
    assert all(s["skipped"] for s in again.extra["training"]["stages"])
    fresh = train_vae(*stamps, cfg | {"beta": 0.5}, out / "vae.pt", out / "metrics.csv", ckpt, seed=5)
    assert not any(s["skipped"] or s["resumed"] for s in fresh.extra["training"]["stages"])
