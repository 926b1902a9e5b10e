"""Study 002's networks: shapes, a gradient step, overfitting a tiny batch, the standardisation round trip, the
calibration of the uncertainties, and the evaluation arithmetic on cases with a known answer."""

import numpy as np
import pandas as pd
import pytest
import torch

from sourcelens.evaluate.cnn import calibration_curve, cnn_summary
from sourcelens.models import LensCNN, UNet, load_cnn, load_unet, save_cnn, save_unet
from sourcelens.models.common import lensed_image_scale, normalise_lensed
from sourcelens.names import LENS_PARAMETERS
from sourcelens.train.cnn import CNNModule, calibrate
from sourcelens.train.unet import UNetModule


@pytest.mark.parametrize("arch,widths", [("resnet", (8, 16)), ("study", (8, 16, 32))])
def test_cnn_shapes_and_gradient_step(arch, widths):
    torch.manual_seed(0)
    model = LensCNN(image_size=32, arch=arch, widths=widths, dense=16)
    x = torch.randn(4, 1, 32, 32)
    mean, log_var = model(x)
    assert mean.shape == log_var.shape == (4, 8)
    module = CNNModule(model, loss="nll", augment=False)
    before = [p.detach().clone() for p in model.parameters()]
    loss = module.compute_loss(x, torch.randn(4, 8))["loss"]
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_cnn_overfits_a_tiny_batch_and_predicts_in_physical_units():
    """8 images, parameters set in physical units: the MSE stage drives the training error near zero, and the
    physical outputs undo the standardisation (mean, std of the 8 targets)."""
    torch.manual_seed(1)
    model = LensCNN(image_size=32, arch="resnet", widths=(8, 16), dense=32)
    x = torch.randn(8, 1, 32, 32)
    y = torch.randn(8, 8) * torch.tensor([0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.03, 0.03]) + 1.0
    with torch.no_grad():
        model.target_mean.copy_(y.mean(0))
        model.target_std.copy_(y.std(0))
    module = CNNModule(model, loss="mse", augment=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = module.compute_loss(x, y)["loss"]
        loss.backward()
        opt.step()
    assert loss.item() < 0.01
    model.train()                                        # batch norm in batch statistics, as when overfitted
    mean, log_var = model(x)
    physical, sigma = model.physical(mean, log_var)
    assert torch.allclose(physical, y, atol=0.1 * y.std(0).max().item())
    assert torch.allclose(model.standardise(physical), mean, atol=1e-5)   # the round trip
    assert (sigma > 0).all()


def test_calibration_scales_sigma_to_the_validation_errors():
    """Outputs whose errors are twice the predicted σ get sigma_scale 2; without a variance head the σ is the
    RMS error of each parameter."""
    torch.manual_seed(2)
    model = LensCNN(image_size=16, arch="resnet", widths=(4,), dense=8)
    n = 4000
    x = torch.zeros(n, 1, 16, 16)

    class Fixed(torch.nn.Module):          # a model whose outputs we choose: mean 0, log σ² = 0
        def __init__(self):
            super().__init__()
            self.head = model.head

        def forward(self, inputs):
            return torch.zeros(len(inputs), 8), torch.zeros(len(inputs), 8)

    fake = Fixed()
    fake.n_params = 8
    fake.standardise = lambda p: p
    fake.sigma_scale = torch.ones(8)
    fake.parameters = model.parameters
    truth = torch.randn(n, 8) * 2.0
    scale = calibrate(fake, x, truth, heteroscedastic=True)
    assert torch.allclose(scale, torch.full((8,), 2.0), rtol=0.05)
    scale = calibrate(fake, x, truth * 3, heteroscedastic=False)
    assert torch.allclose(scale, torch.full((8,), 6.0), rtol=0.05)
    # heavy-tailed errors (Student t, 3 dof): the calibrated ±σ still holds 68 % of them, not more
    heavy = torch.distributions.StudentT(3.0).sample((n, 8))
    scale = calibrate(fake, x, heavy, heteroscedastic=True)
    inside = (heavy.abs() <= scale).float().mean(0)
    assert torch.allclose(inside, torch.full((8,), 0.6827), atol=0.002)


def test_coverage_and_calibration_curve_known_answer():
    """Gaussian errors with the stated σ: 68 % / 95 % coverage and a diagonal calibration curve; errors twice the
    stated σ: under-coverage as the normal distribution says."""
    rng = np.random.default_rng(3)
    n = 20000
    pred = pd.DataFrame({"kind": np.where(np.arange(n) % 2, "parametric", "cosmos_fit"), "snr": 50.0})
    for j, name in enumerate(LENS_PARAMETERS):
        true = rng.normal(0, 1, n)
        sigma = np.full(n, 0.3)
        factor = 2.0 if name == "gamma" else 1.0
        pred[f"true_{name}"] = true
        pred[f"pred_{name}"] = true + factor * sigma * rng.standard_normal(n)
        pred[f"sigma_{name}"] = sigma
        pred[f"z_{name}"] = (pred[f"pred_{name}"] - true) / sigma
    table = cnn_summary(pred, np.ones(8)).set_index("quantity")
    assert table.loc["68% coverage", "theta_E"] == pytest.approx(0.683, abs=0.01)
    assert table.loc["95% coverage", "e1"] == pytest.approx(0.95, abs=0.01)
    assert table.loc["68% coverage", "gamma"] == pytest.approx(0.383, abs=0.01)      # erf(0.5 / sqrt 2)
    assert table.loc["R²", "theta_E"] == pytest.approx(1 - 0.09, abs=0.01)
    assert table.loc["MSE (study 002)", "theta_E"] == 0.0699
    assert list(table.index[3:5]) == ["R² (cosmos_fit)", "R² (parametric)"]
    curve = calibration_curve(pred, [0.5, 0.9])
    assert curve["e2"].tolist() == pytest.approx([0.5, 0.9], abs=0.015)
    # a parameter held fixed in training has nothing to predict
    fixed = cnn_summary(pred, np.ones(8), fixed=["gamma"]).set_index("quantity")
    assert np.isnan(fixed.loc["R²", "gamma"]) and np.isnan(fixed.loc["68% coverage", "gamma"])


def test_unet_shapes_gradient_and_overfit():
    torch.manual_seed(4)
    model = UNet(image_size=32, widths=(8, 16, 32))
    x = torch.randn(4, 1, 32, 32)
    target = torch.rand(4, 1, 32, 32)
    assert model(x).shape == (4, 1, 32, 32)
    module = UNetModule(model, loss="mse_ssim", augment=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = module.compute_loss(x, target)["loss"].item()
    for _ in range(150):
        opt.zero_grad()
        out = module.compute_loss(x, target)
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < 0.3 * first and out["ssim"].item() > 0.8
    with pytest.raises(ValueError, match="divisible"):
        UNet(image_size=30, widths=(8, 16, 32))


def test_dihedral_average_is_equivariant_and_single_pass_is_the_network():
    from sourcelens.models.unet import delens, dihedral_average

    torch.manual_seed(5)
    model = UNet(image_size=16, widths=(4, 8)).eval()
    images = torch.rand(3, 16, 16)

    def network(b):
        return model(b[:, None])[:, 0]

    with torch.no_grad():
        mean = dihedral_average(network, images)
        # the average of a network that is not equivariant is: turning the input turns the output
        assert torch.allclose(dihedral_average(network, torch.rot90(images, 1, (1, 2))), torch.rot90(mean, 1, (1, 2)),
                              atol=1e-5)
        assert torch.allclose(dihedral_average(network, images.flip(1)), mean.flip(1), atol=1e-5)
        assert not torch.allclose(network(torch.rot90(images, 1, (1, 2))), torch.rot90(network(images), 1, (1, 2)),
                                  atol=1e-3)
        # an equivariant "network" (pointwise) is left as it is
        assert torch.allclose(dihedral_average(torch.square, images), images**2, atol=1e-6)
    raw = images.numpy() * 7.0                          # any units: delens normalises
    single = delens(model, raw, dihedral=False, device=torch.device("cpu"))
    with torch.no_grad():
        expected = network(torch.as_tensor(normalise_lensed(raw.astype(np.float32))[0]))
    assert np.allclose(single, expected.numpy(), atol=1e-5)
    averaged = delens(model, raw, device=torch.device("cpu"))
    assert averaged.shape == single.shape and not np.allclose(averaged, single, atol=1e-4)


def test_cnn_residual_blocks_per_stage(tmp_path):
    """``blocks``: one number for every stage or one per width; saved with the model; older files (no ``blocks``
    in their hyperparameters) load as two blocks a stage."""
    from sourcelens.models.cnn import _Residual

    def residuals(model):
        return sum(isinstance(m, _Residual) for m in model.modules())

    assert residuals(LensCNN(image_size=32, widths=(4, 8, 16), dense=8)) == 6
    model = LensCNN(image_size=32, widths=(4, 8, 16), dense=8, blocks=[1, 1, 2])
    assert residuals(model) == 4 and model.hparams["blocks"] == [1, 1, 2]
    assert model(torch.randn(2, 1, 32, 32))[0].shape == (2, 8)
    save_cnn(model, tmp_path / "cnn.pt")
    assert residuals(load_cnn(tmp_path / "cnn.pt")) == 4
    old = dict(model.hparams)
    old.pop("blocks")
    assert residuals(LensCNN(**old)) == 6
    for bad in (0, [1, 2], [1, 0, 1]):
        with pytest.raises(ValueError, match="blocks"):
            LensCNN(image_size=32, widths=(4, 8, 16), blocks=bad)


def test_model_files_round_trip_and_refuse_others(tmp_path):
    cnn = LensCNN(image_size=16, arch="resnet", widths=(4,), dense=8)
    with torch.no_grad():
        cnn.target_mean.fill_(0.5)
        cnn.sigma_scale.fill_(1.7)
    save_cnn(cnn, tmp_path / "cnn.pt", provenance={"rule": "x"})
    again = load_cnn(tmp_path / "cnn.pt")
    assert again.hparams == cnn.hparams and torch.equal(again.sigma_scale, cnn.sigma_scale)
    assert again.provenance == {"rule": "x"} and not again.training
    x = torch.randn(2, 1, 16, 16)
    cnn.eval()
    assert torch.equal(again(x)[0], cnn(x)[0])
    save_unet(UNet(image_size=16, widths=(4, 8)), tmp_path / "unet.pt", extra={"source_grid": {"num_pix": 16}})
    assert load_unet(tmp_path / "unet.pt").extra["source_grid"] == {"num_pix": 16}
    with pytest.raises(ValueError, match="unet.pt.*not a sourcelens lens-parameter CNN"):
        load_cnn(tmp_path / "unet.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt"):
        load_unet(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_cnn(tmp_path / "missing.pt")


def test_lensed_normalisation_is_robust_to_a_hot_pixel():
    img = np.zeros((1, 16, 16), np.float32)
    img[0, 6:9, 6:9] = 2.0                 # an arc 3x3 pixels bright at 2
    img[0, 0, 0] = 50.0                    # a single noisy pixel
    scale = lensed_image_scale(img)
    assert scale[0] == pytest.approx(2.0)
    x, s = normalise_lensed(img * 7.0)
    assert s[0] == pytest.approx(14.0) and x[0, 7, 7] == pytest.approx(1.0)


def test_cosine_schedule_anneals_over_the_stage_and_plateau_is_default():
    """``lr_schedule: cosine`` anneals from the learning rate to 1 % of it over the stage's epochs; the default
    stays ReduceLROnPlateau on val_loss; an unknown schedule or a cosine without epochs is refused."""
    from sourcelens.train.modules import COSINE_FLOOR

    model = LensCNN(image_size=16, widths=(4, 8), arch="study")
    module = CNNModule(model, loss="mse", learning_rate=1e-3, lr_schedule="cosine", epochs=10)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(COSINE_FLOOR * 1e-3)
    plateau = UNetModule(UNet(image_size=16, widths=(4, 8))).configure_optimizers()
    assert isinstance(plateau["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert plateau["lr_scheduler"]["monitor"] == "val_loss"
    with pytest.raises(ValueError, match="schedule"):
        CNNModule(model, lr_schedule="step")
    with pytest.raises(ValueError, match="epochs"):
        CNNModule(model, lr_schedule="cosine")
