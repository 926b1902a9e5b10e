"""VAE training: model shapes, gradients, losses (SSIM against scikit-image), a tiny overfit, and
train_vae end to end on tiny synthetic stamps files: resuming after an interruption gives the model of an
uninterrupted run, damaged checkpoint files never block a rerun, the checkpoint folder; and the generic
staged training with a model that is not the VAE."""

import json
import logging
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from sourcelens.io import write_dataset
from sourcelens.fit.decoder import reference_metric
from sourcelens.models.vae import VAE, load_vae
from sourcelens.plots import learning_curve
from sourcelens.metrics import ssim_torch
from sourcelens.train import (METRIC_COLUMNS, PROGRESS_FILE, RECON_LOSSES, VAEModule, clean_checkpoints,
                              init_output_bias, reconstruction_loss, train_stages, train_vae)


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
    assert summary["best_checkpoint"] == str(out / "ckpt" / "stage2_chi2" / "best.ckpt")
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


# --------------------------------------------------------------------------------------
# exact resume and damaged files. One straight-through run is the reference. Its validation loss is the
# real one plus a scripted per-epoch ramp that dominates it, so that on any machine the plateau scheduler
# (lr_patience 1) halves the rate after stage-2 epochs 3 and 6, and early stopping (patience 3) ends stage 2
# after epoch 7 of 10, with the best weights at epoch 4: every kill below lands where it matters.

RESUME = TINY | {"lr_patience": 1, "early_stopping_patience": 3,
                 "stages": [{"loss": "mae", "epochs": 2}, {"loss": "mse", "epochs": 10}]}
VAL_RAMP = (5, 4, 4.5, 4.6, 3, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0)   # × 1000, added to val_loss per epoch
DROP_EPOCH = 4   # first stage-2 epoch at the halved rate (decided by the step after epoch 3)


def _scripted(compute_loss):
    def scripted(self, x, sigma=None):
        out = compute_loss(self, x, sigma)
        if not self.training:  # validation
            out = dict(out, loss=out["loss"] + 1000.0 * VAL_RAMP[self.current_epoch])
        return out
    return scripted


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(VAEModule, "compute_loss", _scripted(VAEModule.compute_loss))


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Stamps files, and the outputs of an uninterrupted run of RESUME."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("straight")
    stamps = (_stamps_file(tmp / "train.h5", 24, 16, seed=1, noise=0.02),
              _stamps_file(tmp / "val.h5", 8, 16, seed=2, noise=0.02))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VAEModule, "compute_loss", _scripted(VAEModule.compute_loss))
        model = train_vae(*stamps, RESUME, tmp / "vae.pt", tmp / "metrics.csv", tmp / "ckpt", seed=5)
    torch.set_num_threads(threads)
    metrics = pd.read_csv(tmp / "metrics.csv")
    stage2 = metrics[metrics["stage"] == 2]
    lr = RESUME.get("learning_rate", 1e-3)
    assert stage2["lr"].tolist() == pytest.approx([lr] * 4 + [lr / 2] * 3 + [lr / 4], rel=1e-6)
    assert model.extra["training"]["stages"][1] | {"best_model_path": None} == {
        "stage": 2, "loss": "mse", "max_epochs": 10, "epochs_run": 8, "best_val_loss": pytest.approx(
            stage2["val_loss"].iloc[4], rel=1e-6), "best_epoch": 4, "stopped_early": True, "resumed": False,
        "skipped": False, "best_model_path": None}
    return {"stamps": stamps, "metrics": metrics, "model": model.state_dict(), "ckpt": tmp / "ckpt",
            "last": _state(tmp / "ckpt" / "stage2_mse" / "last.ckpt")}


def _assert_same_as_straight(straight, out, model):
    """Same metrics CSV, same final (best) weights, and the same weights at the end of the last epoch."""
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), straight["metrics"])
    for states in ((model.state_dict(), straight["model"]),
                   (_state(out / "ckpt" / "stage2_mse" / "last.ckpt"), straight["last"])):
        assert states[0].keys() == states[1].keys()
        for name, value in states[0].items():
            assert torch.equal(value, states[1][name]), name


def _interrupted(straight, out, hook, when):
    """Run RESUME into ``out`` until ``VAEModule.<hook>`` raises where ``when(module, *args)`` holds."""
    def interrupt(self, *args):
        if when(self, *args):
            raise RuntimeError("simulated kill")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VAEModule, hook, interrupt)
        with pytest.raises(RuntimeError, match="simulated kill"):
            train_vae(*straight["stamps"], RESUME, out / "vae.pt", out / "metrics.csv", out / "ckpt", seed=5)


def _kill_after_lr_drop(straight, out):
    """Killed mid-epoch in the epoch after the checkpoint whose epoch made the scheduler halve the rate."""
    _interrupted(straight, out, "on_train_batch_start",
                 lambda m, batch, i: m.loss_kind == "mse" and m.current_epoch == DROP_EPOCH and i == 1)


def _rerun(straight, out, caplog):
    with caplog.at_level(logging.WARNING, logger="sourcelens.train"):
        return train_vae(*straight["stamps"], RESUME, out / "vae.pt", out / "metrics.csv", out / "ckpt", seed=5)


def _warnings(caplog):
    return " ".join(r.getMessage() for r in caplog.records
                    if r.name == "sourcelens.train" and r.levelno >= logging.WARNING)


@pytest.mark.parametrize("kill", ["after_lr_drop", "after_early_stop"])
def test_resumed_run_is_the_uninterrupted_run(straight, scripted, tmp_path, monkeypatch, caplog, kill):
    """Killed in stage 2 and rerun: exactly the weights and metrics of the straight run (shuffling, noise,
    the ReduceLROnPlateau step Lightning skips when resuming from an epoch-end checkpoint, the early stop)."""
    if kill == "after_lr_drop":
        _kill_after_lr_drop(straight, tmp_path)
        trained = list(range(DROP_EPOCH, 8))
    else:  # after the checkpoint of the epoch where early stopping decided to stop
        _interrupted(straight, tmp_path, "on_train_end", lambda m: m.loss_kind == "mse")
        trained = []
    epochs = []
    monkeypatch.setattr(VAEModule, "on_train_epoch_start", lambda m: epochs.append(m.current_epoch))
    model = _rerun(straight, tmp_path, caplog)
    assert [(s["skipped"], s["resumed"]) for s in model.extra["training"]["stages"]] == [(True, False), (False, True)]
    assert not _warnings(caplog)
    _assert_same_as_straight(straight, tmp_path, model)
    assert epochs == trained   # from the epoch of the kill on: last.ckpt is every epoch's, not the best one's


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"garbage" * 10], ids=["truncated", "garbage"])
def test_damaged_last_checkpoint_falls_back_to_best(straight, scripted, tmp_path, caplog, damage):
    _kill_after_lr_drop(straight, tmp_path)
    stage = tmp_path / "ckpt" / "stage2_mse"
    last = stage / "last.ckpt"
    assert _state(stage / "best.ckpt") is not None
    last.write_bytes(damage(last.read_bytes()))
    model = _rerun(straight, tmp_path, caplog)
    assert [(s["skipped"], s["resumed"]) for s in model.extra["training"]["stages"]] == [(True, False), (False, True)]
    message = _warnings(caplog)
    assert str(last) in message and "damaged" in message and "resuming from" in message and "best.ckpt" in message
    _assert_same_as_straight(straight, tmp_path, model)   # the epochs after the best one, trained again, are the same


def test_damaged_checkpoints_restart_the_stage(straight, scripted, tmp_path, caplog):
    _kill_after_lr_drop(straight, tmp_path)
    stage = tmp_path / "ckpt" / "stage2_mse"
    for name in ("last.ckpt", "best.ckpt"):
        (stage / name).write_bytes(b"\x00" * 100)
    model = _rerun(straight, tmp_path, caplog)
    assert [(s["skipped"], s["resumed"]) for s in model.extra["training"]["stages"]] == [(True, False), (False, False)]
    message = _warnings(caplog)
    assert str(stage / "best.ckpt") in message and "starting the stage afresh" in message
    _assert_same_as_straight(straight, tmp_path, model)


def test_damaged_best_of_a_finished_stage_retrains_it(straight, scripted, tmp_path, caplog):
    _kill_after_lr_drop(straight, tmp_path)
    best = tmp_path / "ckpt" / "stage1_mae" / "best.ckpt"
    best.write_bytes(best.read_bytes()[:1000])
    model = _rerun(straight, tmp_path, caplog)
    # stage 1 trained again, and stage 2, which started from it, afresh
    assert [(s["skipped"], s["resumed"]) for s in model.extra["training"]["stages"]] == [(False, False), (False, False)]
    message = _warnings(caplog)
    assert str(best) in message and "training the stage again" in message
    _assert_same_as_straight(straight, tmp_path, model)


def test_damaged_progress_file_starts_afresh(straight, scripted, tmp_path, caplog):
    shutil.copytree(straight["ckpt"], tmp_path / "ckpt")
    progress = tmp_path / "ckpt" / PROGRESS_FILE
    progress.write_text(progress.read_text()[:50])
    model = _rerun(straight, tmp_path, caplog)
    assert not any(s["skipped"] or s["resumed"] for s in model.extra["training"]["stages"])
    message = _warnings(caplog)
    assert str(progress) in message and "damaged" in message and "afresh" in message
    assert json.loads(progress.read_text())["finished"].keys() == {"stage1_mae", "stage2_mse"}
    _assert_same_as_straight(straight, tmp_path, model)


def test_checkpoint_dir_is_not_in_the_fingerprint(straight, scripted, tmp_path, monkeypatch):
    """``vae.checkpoint_dir`` is where the cache lives, not what it holds: a moved cache is still used, and
    train_vae takes the folder from the config unless given one."""
    shutil.copytree(straight["ckpt"], tmp_path / "moved")
    model = train_vae(*straight["stamps"], RESUME | {"checkpoint_dir": "somewhere/else"}, tmp_path / "vae.pt",
                      tmp_path / "metrics.csv", tmp_path / "moved", seed=5)
    assert all(s["skipped"] for s in model.extra["training"]["stages"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "metrics.csv"), straight["metrics"])

    monkeypatch.chdir(tmp_path)
    model = train_vae(*straight["stamps"], RESUME | {"checkpoint_dir": "moved"}, "vae.pt", "metrics.csv", seed=5)
    stages = model.extra["training"]["stages"]
    assert all(s["skipped"] for s in stages)
    assert stages[-1]["best_model_path"] == str(Path("moved") / "stage2_mse" / "best.ckpt")


def test_clean_checkpoints(straight, tmp_path):
    ckpt = shutil.copytree(straight["ckpt"], tmp_path / "ckpt")
    files = sorted(p for p in ckpt.rglob("*") if p.is_file())
    assert (ckpt / PROGRESS_FILE) in files and (ckpt / "stage2_mse" / "last.ckpt") in files
    assert clean_checkpoints(ckpt) == files and not ckpt.exists()
    assert clean_checkpoints(ckpt) == []   # nothing there: nothing to do
    other = tmp_path / "results"
    other.mkdir()
    (other / "vae.pt").write_bytes(b"precious")
    with pytest.raises(ValueError, match="does not look like a training checkpoint folder"):
        clean_checkpoints(other)
    # nor does training empty a folder that is not its own
    with pytest.raises(ValueError, match="does not look like a training checkpoint folder"):
        train_vae(*straight["stamps"], RESUME, tmp_path / "vae.pt", tmp_path / "metrics.csv", other, seed=5)
    assert (other / "vae.pt").read_bytes() == b"precious"


class _Regressor(L.LightningModule):
    """The least a model adds to use the staged training: a LightningModule logging train/val_loss and lr."""

    def __init__(self, net, learning_rate):
        super().__init__()
        self.net, self.learning_rate = net, learning_rate

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        self.log("lr", self.learning_rate, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.learning_rate)


def test_train_stages_takes_any_model(tmp_path):
    """The generic API: a factory of the stage config around one shared network, datasets, settings."""
    torch.manual_seed(0)
    x = torch.randn(40, 3)
    data = TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]))
    net = torch.nn.Linear(3, 1)
    settings = {"stages": [{"epochs": 2, "lr": 0.1}, {"epochs": 3, "lr": 0.01}], "batch_size": 8,
                "early_stopping_patience": 5, "accelerator": "cpu"}
    result = train_stages(lambda stage: _Regressor(net, stage["lr"]), data, data, settings, tmp_path / "ckpt", 3)
    assert [(r["stage"], r["epoch"]) for r in result.rows] == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    assert [r["lr"] for r in result.rows] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01])
    assert result.best_checkpoint == str(tmp_path / "ckpt" / "stage2" / "best.ckpt")
    assert result.module.net is net   # the shared network holds the best weights of the last stage
    torch.testing.assert_close(net.state_dict(), {k.removeprefix("net."): v for k, v in
                                                  _state(result.best_checkpoint).items()})
    again = train_stages(lambda stage: _Regressor(net, stage["lr"]), data, data, settings, tmp_path / "ckpt", 3)
    assert all(s["skipped"] for s in again.stages) and again.rows == result.rows
