"""Super-resolution networks (studies 001 and 004): SISR, LensSR, PISR and their physics and training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sourcelens.io import write_dataset
from sourcelens.lensing import (
    LensingSimulator, SRGeometry, SRLens, block_mean, chi2_per_pixel, convolve, fine_sigma, psf_kernel,
    total_variation,
)
from sourcelens.models.lenssr import (
    LensSRNoSource, lenssr_no_source_loss, lenssr_super_resolve, load_lenssr, save_lenssr,
)
from sourcelens.models.pisr import PISR, load_pisr, pisr_forward, pisr_loss, pisr_super_resolve, save_pisr
from sourcelens.models.sisr import SISR, bicubic_super_resolve, load_sisr, save_sisr, super_resolve, upsample_bicubic
from sourcelens.names import LENS_PARAMETERS

N_LR, SCALE, FACTOR = 16, 0.2, 2
PSF = {"type": "GAUSSIAN", "fwhm_arcsec": 0.3}


@pytest.fixture(scope="module")
def geometry() -> SRGeometry:
    return SRGeometry(N_LR, SCALE, FACTOR, psf_kernel(PSF, SCALE / FACTOR, FACTOR))


def _sie(theta_e: float = 0.8, e1: float = 0.1) -> tuple[list[str], list[dict[str, float]]]:
    return ["SIE"], [dict(theta_E=theta_e, e1=e1, e2=0.0, center_x=0.0, center_y=0.0)]


def _write_sr_set(path, n: int, lens_model: str, seed: int, noise: float = 0.05):
    """A tiny SR dataset as the pipeline writes them: lensed Sérsics on the fine grid with the PSF, block-summed
    to the coarse grid, noise ``noise`` × the peak on the coarse image only."""
    rng = np.random.default_rng(seed)
    kernel = psf_kernel(PSF, SCALE / FACTOR, FACTOR)
    sim = LensingSimulator(N_LR * FACTOR, SCALE / FACTOR, supersample=2, psf=kernel)
    params = np.zeros((n, len(LENS_PARAMETERS)))
    params[:, 0] = rng.uniform(0.6, 0.9, n)
    params[:, 1] = 2.0
    if lens_model == "SIE":
        params[:, 2] = rng.uniform(-0.1, 0.1, n)
    kw_lens = {"theta_E": torch.as_tensor(params[:, 0]), "center_x": torch.zeros(n), "center_y": torch.zeros(n)}
    if lens_model == "SIE":
        kw_lens |= {"e1": torch.as_tensor(params[:, 2]), "e2": torch.zeros(n)}
    kw_src = {"amp": torch.full((n,), 10.0), "R_sersic": torch.as_tensor(rng.uniform(0.2, 0.4, n)),
              "n_sersic": torch.ones(n), "e1": torch.as_tensor(rng.uniform(-0.2, 0.2, n)), "e2": torch.zeros(n),
              "center_x": torch.as_tensor(rng.uniform(-0.15, 0.15, n)), "center_y": torch.zeros(n)}
    hr = sim.image([lens_model], [kw_lens], ["SERSIC_ELLIPSE"], [kw_src]).numpy()
    lr = hr.reshape(n, N_LR, FACTOR, N_LR, FACTOR).sum((2, 4))
    sigma = np.full_like(lr, noise) * lr.max((1, 2), keepdims=True)
    arrays = {"low_res": (lr + rng.normal(size=lr.shape) * sigma).astype(np.float32),
              "low_res_noiseless": lr.astype(np.float32), "high_res": hr.astype(np.float32),
              "noise_sigma": sigma.astype(np.float32), "source_high_res": np.zeros_like(hr, np.float32),
              "lens_params": params.astype(np.float32)}
    attrs = {"lens_model": lens_model, "factor": FACTOR, "low_res_num_pix": N_LR, "low_res_pixel_scale_arcsec": SCALE,
             "high_res_pixel_scale_arcsec": SCALE / FACTOR, "psf": PSF, "supersampling": 2}
    write_dataset(path, arrays, pd.DataFrame({"source_id": [f"s{i}" for i in range(n)]}), kind="sr", attrs=attrs)
    return path


@pytest.fixture(scope="module")
def sr_sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("sr")
    return (_write_sr_set(d / "train.h5", 6, "SIE", 1), _write_sr_set(d / "val.h5", 2, "SIE", 2))


def _tiny(**kw):
    return {"sisr": {"width": 8, "depth": 1}, "batch_size": 4, "accelerator": "cpu", "early_stopping_patience": 50,
            **kw}


# ------------------------------------------------------------------------------------------- shapes
def test_shapes_and_the_bicubic_start(geometry):
    x = torch.rand(3, 1, N_LR, N_LR)
    for factor in (2, 3, 4):
        assert SISR(factor=factor, width=4, depth=1)(x).shape == (3, 1, factor * N_LR, factor * N_LR)
        assert SISR(factor=factor, width=4, depth=0, skip="none")(x).shape == (3, 1, factor * N_LR, factor * N_LR)
    # bicubic skip with a zero last layer: the untrained network is bicubic upsampling
    torch.testing.assert_close(SISR(width=4, depth=1)(x), upsample_bicubic(x, 2))
    for net in ("sisr", "unet"):
        m = PISR(2, network=net, sisr={"width": 4, "depth": 1}, unet={"widths": [4, 8]})
        torch.testing.assert_close(m(x), upsample_bicubic(x, 2))
    image, source = LensSRNoSource(2, {"width": 4, "depth": 1})(x, x)
    assert image.shape == source.shape == (3, 1, 2 * N_LR, 2 * N_LR)
    # flux units: the bicubic baseline of a flat image conserves flux
    flat = np.ones((1, N_LR, N_LR), np.float32)
    assert bicubic_super_resolve(flat, 2).sum() == pytest.approx(flat.sum(), rel=1e-5)
    lens = SRLens(geometry, *_sie())
    out = pisr_forward(PISR(2, sisr={"width": 4, "depth": 1}), [lens] * 3, x[:, 0])
    assert out["source"].shape == out["high_res"].shape == (3, 2 * N_LR, 2 * N_LR)
    assert out["model"].shape == out["source_low_res"].shape == (3, N_LR, N_LR)
    with pytest.raises(ValueError, match="skip"):
        SISR(skip="nearest")


# ------------------------------------------------------------------------------------------- physics
def test_identity_lens_reduces_to_blur_and_downsampling(geometry):
    lens = SRLens(geometry, ["SIS"], [dict(theta_E=0.0, center_x=0.0, center_y=0.0)])
    source = torch.rand(2, 2 * N_LR, 2 * N_LR)
    torch.testing.assert_close(lens.lens(source), source)
    high_res, model = lens(source)
    torch.testing.assert_close(high_res, convolve(source, lens.psf))
    torch.testing.assert_close(model, block_mean(convolve(source, lens.psf), FACTOR))
    image = torch.rand(2, N_LR, N_LR)
    torch.testing.assert_close(lens.to_source(image), image)          # i∘β = i
    assert torch.all(lens.weight(mask=True, magnify=True) == 1)       # nothing masked, μ = 1 everywhere


def test_chi2_is_one_per_pixel_on_pure_noise(geometry):
    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(16, N_LR, N_LR, generator=gen)
    sigma = 0.05 + 0.2 * torch.rand(16, N_LR, N_LR, generator=gen)
    data = truth + sigma * torch.randn(truth.shape, generator=gen)
    lens = SRLens(geometry, *_sie())
    for w in (None, lens.weight(mask=True), lens.weight(magnify=True)):
        assert float(chi2_per_pixel(data, truth, sigma, w).mean()) == pytest.approx(1.0, abs=0.06)
    # fine-grid residuals: f·σ per fine pixel averages back to σ per coarse pixel
    fine = fine_sigma(sigma, FACTOR) * torch.randn(16, 2 * N_LR, 2 * N_LR, generator=gen)
    assert float(chi2_per_pixel(fine, torch.zeros_like(fine), fine_sigma(sigma, FACTOR)).mean()) == \
        pytest.approx(1.0, abs=0.04)
    assert float(chi2_per_pixel(block_mean(fine, FACTOR), torch.zeros_like(data), sigma).mean()) == \
        pytest.approx(1.0, abs=0.06)
    # the PISR loss is that χ² (+ λ TV): a source whose model is the truth scores ≈ 1
    out = {"model": truth, "source": torch.zeros(16, 2 * N_LR, 2 * N_LR)}
    assert float(pisr_loss(out, data, sigma, tv_weight=5.0)["loss"]) == pytest.approx(1.0, abs=0.06)
    assert float(total_variation(torch.zeros(2, 8, 8)).sum()) == 0


def test_gradients_reach_f_through_the_sparse_operator(geometry):
    torch.manual_seed(0)
    lens = SRLens(geometry, *_sie())
    assert lens.forward_op.matrix_t.layout == torch.sparse_csr
    model = PISR(2, sisr={"width": 4, "depth": 1, "skip": "none"})
    x = torch.rand(2, N_LR, N_LR)
    out = pisr_forward(model, [lens, lens], x)
    pisr_loss(out, x, torch.full_like(x, 0.1), tv_weight=0.01)["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # LensSR: both networks get gradients through the lens-equation tie
    net = LensSRNoSource(2, {"width": 4, "depth": 1, "skip": "none"})
    image, source = net(x[:, None], lens.to_source(x)[:, None])
    lenssr_no_source_loss(image[:, 0], source[:, 0], [lens, lens], x, torch.full_like(x, 0.1))["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.source_net.parameters())
    # and through the bilinear map (the training default)
    net.zero_grad()
    image, source = net(x[:, None], lens.to_source(x)[:, None])
    lenssr_no_source_loss(image[:, 0], source[:, 0], [lens, lens], x, torch.full_like(x, 0.1),
                          interpolation="bilinear")["lens"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.source_net.parameters())


def test_physics_losses_train_under_bf16_autocast(geometry):
    """In a bf16 mixed-precision step (``precision: bf16-mixed``) the networks run in bf16 and the lensing
    operators in their own float32 (the CPU has no bf16 sparse product): same lensing as without autocast, and
    gradients reach the networks."""
    torch.manual_seed(0)
    lens = SRLens(geometry, *_sie())
    x = torch.rand(2, N_LR, N_LR)
    source = torch.rand(2, FACTOR * N_LR, FACTOR * N_LR)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for interpolation in ("overlap", "bilinear"):
            hr, lr = lens(source, interpolation)
            ref_hr, ref_lr = (t for t in _outside_autocast(lens, source, interpolation))
            assert hr.dtype == torch.float32 and torch.equal(hr, ref_hr) and torch.equal(lr, ref_lr)
        assert torch.equal(lens.to_source(x), _outside_autocast(lens.to_source, x))
        model = PISR(2, sisr={"width": 4, "depth": 1, "skip": "none"})
        out = pisr_forward(model, [lens, lens], x)
        loss = pisr_loss(out, x, torch.full_like(x, 0.1), tv_weight=0.01)["loss"]
        net = LensSRNoSource(2, {"width": 4, "depth": 1, "skip": "none"})
        image, src = net(x[:, None], lens.to_source(x)[:, None])
        tie = lenssr_no_source_loss(image[:, 0], src[:, 0], [lens, lens], x, torch.full_like(x, 0.1))["loss"]
    (loss + tie).backward()
    for module in (model, net.source_net):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def _outside_autocast(fn, *args):
    with torch.autocast("cpu", enabled=False):
        return fn(*args)


def test_gradient_steps_fit_a_tiny_batch(geometry):
    """A gradient step lowers the PISR loss and Adam keeps lowering it on a tiny batch; a supervised SISR
    overfits a tiny batch."""
    torch.manual_seed(0)
    lens = SRLens(geometry, *_sie())
    gen = torch.Generator().manual_seed(1)
    x = torch.stack([lens(t)[1] for t in torch.rand(2, 2 * N_LR, 2 * N_LR, generator=gen) ** 4])
    x = x / x.amax((1, 2), keepdim=True)
    sigma = torch.full_like(x, 0.01)
    model = PISR(2, sisr={"width": 8, "depth": 1})
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = pisr_loss(pisr_forward(model, [lens, lens], x), x, sigma)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[1] < losses[0] and losses[-1] < 0.85 * losses[0]
    sisr = SISR(width=8, depth=1, skip="none")
    lr = torch.rand(4, 1, 8, 8, generator=gen)
    hr = upsample_bicubic(lr, 2) ** 2
    opt = torch.optim.Adam(sisr.parameters(), 1e-2)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(sisr(lr), hr)
        loss.backward()
        opt.step()
        first = first or loss.item()
    assert loss.item() < 0.2 * first


# ------------------------------------------------------------------------------------------- training
def test_pretraining_teaches_pixelshuffle_bicubic_upsampling(sr_sets, tmp_path):
    """The study's SISR (no bicubic skip) learns bicubic upsampling in the pretraining stage, and the supervised
    SISR overfits its tiny set (training loss falls)."""
    from sourcelens.io import read_dataset
    from sourcelens.train.sr import train_sisr

    train, val = sr_sets
    cfg = _tiny(sisr={"width": 16, "depth": 1, "skip": "none"}, learning_rate=3e-3, augment=False, batch_size=1,
                stages=[{"loss": "bicubic", "epochs": 25}])
    model = train_sisr(train, val, cfg, tmp_path / "sisr.pt", tmp_path / "m.csv", tmp_path / "ck", seed=1)
    lr = read_dataset(train, names=("low_res",))[0]["low_res"]
    sr, ref = super_resolve(model, lr, device=torch.device("cpu")), bicubic_super_resolve(lr, FACTOR)
    err = np.sqrt(np.mean((sr - ref) ** 2)) / np.ptp(ref)
    print("bicubic-pretraining rms error / range:", err)
    assert err < 0.03, err
    metrics = pd.read_csv(tmp_path / "m.csv", comment="#")
    assert metrics["train_loss"].iloc[-1] < 0.1 * metrics["train_loss"].iloc[0]
    assert load_sisr(tmp_path / "sisr.pt").extra["training"]["method"] == "supervised"


def test_physics_methods_train_and_round_trip(sr_sets, tmp_path):
    from sourcelens.train.sr import sr_settings, train_sr

    train, val = sr_sets
    stages = {"lenssr_no_source": "lens", "pisr": "chi2", "lenssr_with_source": "mse", "supervised": "mse"}
    for method, loss in stages.items():
        cfg = _tiny(stages=[{"loss": "bicubic", "epochs": 1}, {"loss": loss, "epochs": 2}],
                    **({"mask": True, "magnification": True} if method == "pisr" else {}),
                    **({"sersic_max_iter": 20} if method == "lenssr_with_source" else {}))
        model = train_sr(method, train, val, cfg, tmp_path / f"{method}.pt", tmp_path / f"{method}.csv",
                         tmp_path / f"ck_{method}", seed=0)
        rows = pd.read_csv(tmp_path / f"{method}.csv", comment="#")
        assert len(rows) == 3 and np.isfinite(rows["val_loss"]).all(), method
        assert model.extra["grid"]["factor"] == FACTOR
    pisr = load_pisr(tmp_path / "pisr.pt")
    assert pisr.extra["training"]["settings"]["mask"] is True
    with pytest.raises(ValueError, match="loss among"):
        sr_settings("pisr", {"stages": [{"loss": "mse", "epochs": 1}]})


def test_save_load_round_trip(tmp_path, geometry):
    x = np.random.default_rng(0).random((2, N_LR, N_LR)).astype(np.float32)
    torch.manual_seed(0)
    sisr = SISR(width=4, depth=1, skip="none")
    save_sisr(sisr, tmp_path / "s.pt", provenance={"rule": "t"}, extra={"method": "supervised"})
    again = load_sisr(tmp_path / "s.pt")
    np.testing.assert_array_equal(super_resolve(sisr, x, device=torch.device("cpu")),
                                  super_resolve(again, x, device=torch.device("cpu")))
    assert again.provenance == {"rule": "t"} and again.hparams == sisr.hparams
    pisr = PISR(2, network="unet", unet={"widths": [4, 8]})
    torch.nn.init.normal_(pisr.f.unet.out.weight)
    save_pisr(pisr, tmp_path / "p.pt")
    lens = SRLens(geometry, *_sie())
    a, b = pisr_super_resolve(pisr, [lens, lens], x), pisr_super_resolve(load_pisr(tmp_path / "p.pt"), [lens, lens], x)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    lenssr = LensSRNoSource(2, {"width": 4, "depth": 1})
    save_lenssr(lenssr, tmp_path / "l.pt")
    assert load_lenssr(tmp_path / "l.pt").hparams == lenssr.hparams
    with pytest.raises(ValueError, match="not a sourcelens"):
        load_pisr(tmp_path / "s.pt")
    with pytest.raises(ValueError, match="not a sourcelens"):
        load_sisr(tmp_path / "l.pt")


def test_lenssr_super_resolve(geometry):
    """One call of LensSR without source: the image network's images (no lens needed) and, given lenses, the
    source network's sources of i∘β, in flux units (an untrained bicubic-skip network is bicubic)."""
    x = (np.random.default_rng(3).random((3, N_LR, N_LR)) * 5).astype(np.float32)
    net = LensSRNoSource(2, {"width": 4, "depth": 1})
    image, none = lenssr_super_resolve(net, x)
    assert none is None and image.shape == (3, 2 * N_LR, 2 * N_LR)
    np.testing.assert_allclose(image, bicubic_super_resolve(x, 2), rtol=1e-5, atol=1e-6)
    lenses = [SRLens(geometry, *_sie(theta_e=t)) for t in (0.6, 0.7, 0.8)]
    image2, source = lenssr_super_resolve(net, x, lenses, batch_size=2)
    np.testing.assert_array_equal(image, image2)
    back = np.stack([lens.to_source(torch.as_tensor(img)).numpy() for lens, img in zip(lenses, x)])
    np.testing.assert_allclose(source, bicubic_super_resolve(back, 2), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one lens each"):
        lenssr_super_resolve(net, x, lenses[:2])


def test_with_source_fit_supersampling_config_overrides_the_dataset():
    """``lenssr_with_source.supersampling``: the config's if set, else the dataset's, else 2."""
    from sourcelens.train.sr import _fit_supersampling

    assert _fit_supersampling({"attrs": {"supersampling": 3}}, {"supersampling": None}) == 3
    assert _fit_supersampling({"attrs": {"supersampling": 3}}, {"supersampling": 1}) == 1
    assert _fit_supersampling({"attrs": {}}, {"supersampling": None}) == 2


# ------------------------------------------------------------------------ bilinear forward map, data consistency
def test_bilinear_forward_map_identity_lens_and_sampling(geometry):
    """θE = 0: the bilinear map at pixel centres is the identity, so the image is the blurred source and the
    binned data model its block mean (as the overlap map); on a point-sampled geometry (Model_I: pixel centres on
    both grids) the low-res model samples the source at the low-res centres, which for factor 2 lie midway
    between four fine cells: their mean."""
    lens = SRLens(geometry, ["SIS"], [dict(theta_E=0.0, center_x=0.0, center_y=0.0)])
    source = torch.rand(2, 2 * N_LR, 2 * N_LR, dtype=torch.float64)
    torch.testing.assert_close(lens.lens(source, "bilinear"), source.float(), rtol=1e-5, atol=1e-6)
    high_res, model = lens(source.float(), "bilinear")
    torch.testing.assert_close(model, block_mean(high_res, FACTOR))
    point = SRGeometry(N_LR, SCALE, FACTOR, None, supersampling=1, low_res_supersampling=1)
    assert not point.low_res_is_binned and geometry.low_res_is_binned
    lens = SRLens(point, ["SIS"], [dict(theta_E=0.0, center_x=0.0, center_y=0.0)])
    _, model = lens(source.float(), "bilinear")
    # the outer ring of low-res centres has neighbours beyond the grid's last cell centre only on no side
    torch.testing.assert_close(model, block_mean(source.float(), FACTOR), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="interpolation"):
        lens.lens(source, "nearest")
    with pytest.raises(ValueError, match="interpolation"):
        PISR(2, interpolation="cubic")


def test_bilinear_map_reproduces_the_rendered_lensed_image():
    """Against the analytic rendering (an SIE lensing a Sérsic at 2×2 sub-pixels per pixel, the simulator that is
    tested against lenstronomy): the true source on the fine grid, lensed by the bilinear map, reproduces the
    image far better than the overlap map of a piecewise-constant source, and gradients reach the source."""
    from sourcelens.lensing import pixel_grid, sersic

    n, scale, f = 24, 0.1, 2
    g = SRGeometry(n, scale, f, None, supersampling=2)
    kw_lens = dict(theta_E=0.7, e1=0.1, e2=-0.05, center_x=0.0, center_y=0.0)
    kw_src = dict(amp=10.0, R_sersic=0.3, n_sersic=1.5, e1=0.1, e2=0.0, center_x=0.05, center_y=-0.05)
    sim = LensingSimulator(f * n, scale / f, supersample=2)
    image = sim.image(["SIE"], [kw_lens], ["SERSIC_ELLIPSE"], [kw_src]).numpy()
    x, y = pixel_grid(f * n, scale / f)
    source = sersic(x, y, **kw_src) * (scale / f) ** 2
    lens = SRLens(g, ["SIE"], [kw_lens], dtype=torch.float64)
    src = source.clone().requires_grad_()
    peak = image.max()
    # rms over the image, in units of its peak (both maps miss most on the critical curves, where the Sérsic's
    # cusp is magnified): 1.6 % bilinear, 8.3 % overlap
    err = {i: np.sqrt(np.mean((lens.lens(src, i).detach().numpy() - image) ** 2)) / peak
           for i in ("bilinear", "overlap")}
    assert err["bilinear"] < 0.025 and err["bilinear"] < err["overlap"] / 3, err
    lens.lens(src, "bilinear").sum().backward()
    assert src.grad is not None and src.grad.abs().sum() > 0


def test_data_consistency_moves_to_the_noise_level():
    from sourcelens.lensing import data_consistency

    rng = np.random.default_rng(0)
    hr = rng.random((3, 2 * N_LR, 2 * N_LR))
    truth = hr + 0.3 * rng.random(hr.shape)
    lr = truth.reshape(3, N_LR, 2, N_LR, 2).sum((2, 4))
    D = lambda a: a.reshape(len(a), N_LR, 2, N_LR, 2).sum((2, 4))  # noqa: E731
    # noiseless data: exact consistency, the correction constant over each block
    out, t = data_consistency(hr, lr, 0.0, 2)
    np.testing.assert_allclose(D(out), lr, rtol=1e-10)
    assert np.all(t == 1)
    step = out - hr
    np.testing.assert_allclose(step, np.repeat(np.repeat(step[:, ::2, ::2], 2, 1), 2, 2))
    # noisy data: χ²/pixel brought down to 1, not below; an image already at the noise level is left alone
    sigma = np.array([0.05, 0.5, 50.0])[:, None, None] * np.ones_like(lr)
    out, t = data_consistency(hr, lr, sigma, 2)
    chi2 = np.mean(((lr - D(out)) / sigma) ** 2, axis=(1, 2))
    np.testing.assert_allclose(chi2[:2], 1.0, rtol=1e-8)
    assert t[2] == 0 and np.array_equal(out[2], hr[2]) and 0 < t[0] < 1
    with pytest.raises(ValueError, match="2×"):
        data_consistency(hr[:, :-2], lr, 0.0, 2)


def test_pisr_interpolation_is_saved_and_old_files_load_as_overlap(tmp_path, geometry):
    pisr = PISR(2, sisr={"width": 4, "depth": 1})
    assert pisr.interpolation == "bilinear"
    save_pisr(pisr, tmp_path / "p.pt")
    assert load_pisr(tmp_path / "p.pt").interpolation == "bilinear"
    payload = torch.load(tmp_path / "p.pt", weights_only=False)
    del payload["hparams"]["interpolation"], payload["hparams"]["refine"]
    torch.save(payload, tmp_path / "old.pt")
    old = load_pisr(tmp_path / "old.pt")
    assert old.interpolation == "overlap" and old.refine["steps"] == 0     # as such files were used
    attrs = {"low_res_num_pix": 8, "low_res_pixel_scale_arcsec": 0.1, "factor": 2, "supersampling": 1,
             "low_res_supersampling": 1}
    assert not SRGeometry.from_attrs(attrs).low_res_is_binned
    assert SRGeometry.from_attrs(attrs | {"low_res_supersampling": 2}).low_res_is_binned
    assert SRGeometry.from_attrs(attrs | {"low_res_supersampling": None, "supersampling": 2}).low_res_is_binned


def test_refine_sources_fits_the_data_and_stops_at_the_noise(geometry):
    """PISR's inference refinement: from a poor start it lowers χ²/pixel of each image, and an image already at
    the noise level (χ² ≤ 1) is left exactly as it was; pisr_super_resolve refines only given the noise."""
    from sourcelens.models.pisr import refine_sources

    lens = SRLens(geometry, *_sie())
    gen = torch.Generator().manual_seed(2)
    truth = torch.rand(2, 2 * N_LR, 2 * N_LR, generator=gen) ** 4
    data = torch.stack([lens(t, "bilinear")[1] for t in truth])
    sigma = torch.full_like(data, 0.02)
    start = torch.stack([truth[0] * 0.5, truth[1]])          # the second explains its data exactly
    refined, chi2 = refine_sources(start, [lens, lens], data, sigma, steps=60, learning_rate=3e-3)
    before = chi2_per_pixel(data[0], lens(start[0], "bilinear")[1], sigma[0])
    assert float(chi2[0]) < 0.5 * float(before)
    torch.testing.assert_close(refined[1], start[1], rtol=0, atol=0)
    model = PISR(2, sisr={"width": 4, "depth": 1}, refine={"steps": 5})
    x = (data * 10).numpy()
    plain, _ = pisr_super_resolve(model, [lens, lens], x)
    again, _ = pisr_super_resolve(model, [lens, lens], x, noise_sigma=None)
    refined_images, _ = pisr_super_resolve(model, [lens, lens], x, noise_sigma=0.0)
    np.testing.assert_array_equal(plain, again)
    assert not np.allclose(plain, refined_images)
    assert PISR(2, refine={"steps": 0}).refine["steps"] == 0 and PISR(2).refine["steps"] == 100
