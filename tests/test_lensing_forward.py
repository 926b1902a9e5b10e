"""sourcelens.lensing forward operator against lenstronomy (float64)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from lenstronomy.Data.pixel_grid import PixelGrid
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel

from sourcelens.lensing import (
    LensingSimulator, convolve_direct, convolve_fft, deflection, downsample, ellipticity_to_phi_q, pixel_grid,
)

LENSES = [["SIS"], ["SIE"], ["EPL"], ["SIE", "SHEAR"], ["EPL", "SHEAR"]]


def random_lens(models, rng):
    kws = []
    for m in models:
        if m == "SHEAR":
            kws.append(dict(gamma1=rng.uniform(-0.08, 0.08), gamma2=rng.uniform(-0.08, 0.08)))
            continue
        kw = dict(theta_E=rng.uniform(0.6, 1.2), center_x=rng.uniform(-0.1, 0.1),
                  center_y=rng.uniform(-0.1, 0.1))
        if m in ("SIE", "EPL"):
            kw.update(e1=rng.uniform(-0.3, 0.3), e2=rng.uniform(-0.3, 0.3))
        if m == "EPL":
            kw.update(gamma=rng.uniform(1.6, 2.4))
        kws.append(kw)
    return kws


def smooth_source(m, rng):
    """A smooth blob on an m x m grid that is zero on a 3-pixel border (flux per pixel)."""
    yy, xx = np.mgrid[:m, :m] - (m - 1) / 2
    cx, cy = rng.uniform(-2, 2, 2)
    src = np.exp(-0.5 * ((xx - cx) ** 2 / rng.uniform(8, 25) + (yy - cy) ** 2 / rng.uniform(5, 20)))
    src += 0.5 * np.exp(-0.5 * ((xx + 3) ** 2 + (yy - 2) ** 2) / 4)
    src[:3], src[-3:], src[:, :3], src[:, -3:] = 0, 0, 0, 0
    return src


def gaussian_kernel(k=7, sigma=1.2):
    g = np.exp(-0.5 * ((np.arange(k) - k // 2) / sigma) ** 2)
    kern = np.outer(g, g)
    return kern / kern.sum()


def lenstronomy_image(n, scale, s, kernel, lens_models, kwargs_lens, light, kwargs_light):
    grid = PixelGrid(n, n, np.eye(2) * scale, -(n - 1) / 2 * scale, -(n - 1) / 2 * scale)
    psf = PSF(psf_type="PIXEL", kernel_point_source=kernel)
    model = ImageModel(grid, psf, lens_model_class=LensModel(lens_models),
                       source_model_class=LightModel(light),
                       kwargs_numerics=dict(supersampling_factor=s, supersampling_convolution=False))
    return model.image(kwargs_lens, kwargs_light)


@pytest.mark.parametrize("lens_models", LENSES, ids="+".join)
@pytest.mark.parametrize("source", ["SERSIC_ELLIPSE", "PIXELATED"])
def test_image_matches_lenstronomy(lens_models, source):
    rng = np.random.default_rng(zlib.crc32(("+".join(lens_models) + source).encode()))
    n, scale, s = 32, 0.1, 2
    kernel = gaussian_kernel()
    kwargs_lens = random_lens(lens_models, rng)
    if source == "SERSIC_ELLIPSE":
        kw = dict(amp=rng.uniform(5, 20), R_sersic=rng.uniform(0.1, 0.4), n_sersic=rng.uniform(1, 4),
                  e1=rng.uniform(-0.2, 0.2), e2=rng.uniform(-0.2, 0.2),
                  center_x=rng.uniform(-0.1, 0.1), center_y=rng.uniform(-0.1, 0.1))
        ours, ref_light, ref_kw = [source], [source], [kw]
        kwargs_light = [kw]
    else:
        m, ss = 40, 0.04
        src = smooth_source(m, rng)
        kwargs_light = [dict(image=torch.tensor(src), pixel_scale=ss)]
        ours, ref_light = ["PIXELATED"], ["INTERPOL"]
        ref_kw = [dict(image=src / ss**2, amp=1.0, center_x=0.0, center_y=0.0, phi_G=0.0, scale=ss)]
    ref = lenstronomy_image(n, scale, s, kernel, lens_models, kwargs_lens, ref_light, ref_kw)
    sim = LensingSimulator(n, scale, s, psf=torch.tensor(kernel))
    img = sim.image(lens_models, kwargs_lens, ours, kwargs_light).numpy()
    assert np.abs(img - ref).max() <= 1e-3 * ref.max()


@pytest.mark.parametrize("lens_models", LENSES, ids="+".join)
def test_deflection_matches_lenstronomy(lens_models):
    rng = np.random.default_rng(len("".join(lens_models)))
    x, y = pixel_grid(24, 0.13)
    for _ in range(3):
        kw = random_lens(lens_models, rng)
        ax, ay = deflection(x, y, lens_models, kw)
        rx, ry = LensModel(lens_models).alpha(x.numpy(), y.numpy(), kw)
        assert np.abs(ax.numpy() - rx).max() < 1e-6
        assert np.abs(ay.numpy() - ry).max() < 1e-6


def test_ellipticity_matches_lenstronomy():
    from lenstronomy.Util.param_util import ellipticity2phi_q

    for e1, e2 in [(0.1, -0.2), (-0.3, 0.05), (0.0, 0.0), (0.7, 0.8)]:
        phi, q = ellipticity_to_phi_q(e1, e2)
        rphi, rq = ellipticity2phi_q(e1, e2)
        assert abs(phi.item() - rphi) < 1e-12 and abs(q.item() - rq) < 1e-12


def test_batch_equals_loop_and_broadcasts():
    rng = np.random.default_rng(3)
    sim = LensingSimulator(16, 0.15, 2, psf=torch.tensor(gaussian_kernel(5)), batch_chunk=2)
    srcs = torch.tensor(np.stack([smooth_source(20, rng) for _ in range(3)]))
    kws = [random_lens(["SIE", "SHEAR"], rng) for _ in range(3)]
    batched = [{k: torch.tensor([kw[i][k] for kw in kws], dtype=torch.float64) for k in kws[0][i]} for i in range(2)]
    out = sim.image(["SIE", "SHEAR"], batched, ["PIXELATED"], [dict(image=srcs, pixel_scale=0.1)])
    assert out.shape == (3, 16, 16)
    for b in range(3):
        one = sim.image(["SIE", "SHEAR"], kws[b], ["PIXELATED"], [dict(image=srcs[b], pixel_scale=0.1)])
        torch.testing.assert_close(out[b], one, rtol=0, atol=1e-12)
    # one source, a batch of lenses; and a batch of sources behind one lens
    out = sim.image(["SIE", "SHEAR"], batched, ["PIXELATED"], [dict(image=srcs[0], pixel_scale=0.1)])
    assert out.shape == (3, 16, 16)
    out = sim.image(["SIE", "SHEAR"], kws[0], ["PIXELATED"], [dict(image=srcs, pixel_scale=0.1)])
    assert out.shape == (3, 16, 16)


def test_fft_and_direct_convolution_agree():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 20, 24, generator=g, dtype=torch.float64)
    kern = torch.rand(5, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(convolve_fft(img, kern), convolve_direct(img, kern), rtol=0, atol=1e-12)
    from scipy.signal import fftconvolve

    ref = fftconvolve(img[0].numpy(), kern.numpy(), mode="same")
    assert np.abs(convolve_direct(img, kern)[0].numpy() - ref).max() < 1e-12
    kerns = torch.rand(2, 5, 5, generator=g, dtype=torch.float64)  # one kernel per image
    per_image = torch.stack([convolve_direct(img[i], kerns[i]) for i in range(2)])
    torch.testing.assert_close(convolve_fft(img, kerns), per_image, rtol=0, atol=1e-12)


def test_downsample_conserves_flux_and_supersampling_converges():
    img = torch.rand(3, 12, 12, dtype=torch.float64)
    small = downsample(img, 3)
    assert small.shape == (3, 4, 4)
    torch.testing.assert_close(small.sum(dim=(-2, -1)), img.sum(dim=(-2, -1)))
    kw = [dict(amp=1.0, R_sersic=0.5, n_sersic=1.0, e1=0.1, e2=0.0)]
    total = [LensingSimulator(32, 0.1, s).unlensed(["SERSIC_ELLIPSE"], kw).sum().item() for s in (1, 4, 8)]
    assert abs(total[1] - total[2]) < abs(total[0] - total[2])


def test_float32_close_to_float64():
    rng = np.random.default_rng(5)
    kw = random_lens(["EPL", "SHEAR"], rng)
    src = smooth_source(30, rng)
    imgs = []
    for dtype in (torch.float32, torch.float64):
        sim = LensingSimulator(24, 0.1, 2, psf=torch.tensor(gaussian_kernel(5)), dtype=dtype)
        imgs.append(sim.image(["EPL", "SHEAR"], kw, ["PIXELATED"],
                              [dict(image=torch.tensor(src, dtype=dtype), pixel_scale=0.05)]))
    assert imgs[0].dtype == torch.float32
    assert (imgs[0].double() - imgs[1]).abs().max() < 1e-4 * imgs[1].max()


def test_gradcheck_source_pixels_and_lens_parameters():
    rng = np.random.default_rng(7)
    src = torch.tensor(smooth_source(12, rng) + 0.01, requires_grad=True)
    theta = torch.tensor([0.45, 0.08, -0.05, 0.02, 0.03], dtype=torch.float64, requires_grad=True)
    sim = LensingSimulator(6, 0.17, 1, psf=torch.tensor(gaussian_kernel(3, 0.8)))

    def f(source, p):
        lens = [dict(theta_E=p[0], e1=p[1], e2=p[2], center_x=0.013, center_y=-0.021),
                dict(gamma1=p[3], gamma2=p[4])]
        return sim.image(["SIE", "SHEAR"], lens, ["PIXELATED"], [dict(image=source, pixel_scale=0.09)])

    assert torch.autograd.gradcheck(f, (src, theta), eps=1e-7, atol=1e-6)
    (g,) = torch.autograd.grad(f(src, theta).sum(), theta)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(9)
    kw = random_lens(["SIE", "SHEAR"], rng)
    src = torch.tensor(smooth_source(30, rng))
    out = []
    for dev in ("cpu", "cuda"):
        sim = LensingSimulator(24, 0.1, 2, psf=torch.tensor(gaussian_kernel(5)), device=dev)
        out.append(sim.image(["SIE", "SHEAR"], kw, ["PIXELATED"],
                             [dict(image=src.to(dev), pixel_scale=0.05)]).cpu())
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-10)


def test_sparse_operator_agrees_with_forward_path():
    from sourcelens.lensing import BilinearLensingOperator

    rng = np.random.default_rng(11)
    sim = LensingSimulator(24, 0.1, 2, psf=torch.tensor(gaussian_kernel(5)), downsample=2)
    lens = ["EPL", "SHEAR"]
    kw = random_lens(lens, rng)
    srcs = torch.tensor(np.stack([smooth_source(36, rng) for _ in range(3)]))
    op = BilinearLensingOperator(sim, lens, kw, (36, 36), 0.06)
    ref = sim.image(lens, kw, ["PIXELATED"], [dict(image=srcs, pixel_scale=0.06)])
    out = op(srcs)
    assert out.shape == (3, 12, 12)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    img = torch.randn(24, 24, dtype=torch.float64)
    s0 = torch.randn(36, 36, dtype=torch.float64)
    assert abs((op.lens(s0) * img).sum() - (s0 * op.adjoint(img)).sum()) < 1e-10


def test_sparse_operator_gradients_reach_source_pixels():
    from sourcelens.lensing import BilinearLensingOperator

    sim = LensingSimulator(8, 0.2, 2, psf=torch.tensor(gaussian_kernel(3, 0.8)))
    op = BilinearLensingOperator(sim, ["SIS"], [dict(theta_E=0.7, center_x=0.01)], (10, 10), 0.12)
    src = torch.rand(2, 10, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (src,))


def test_bicubic_interpolation_and_epl_slope_gradient():
    rng = np.random.default_rng(13)
    src = torch.tensor(smooth_source(40, rng))
    gamma = torch.tensor(2.1, dtype=torch.float64, requires_grad=True)
    lens = [dict(theta_E=0.9, gamma=gamma, e1=0.1, e2=-0.05, center_x=0.02, center_y=0.01)]
    out = {}
    for mode in ("bilinear", "bicubic"):
        sim = LensingSimulator(24, 0.1, 2, interpolation=mode)
        out[mode] = sim.image(["EPL"], lens, ["PIXELATED"], [dict(image=src, pixel_scale=0.04)])
    assert (out["bicubic"] - out["bilinear"]).abs().max() < 0.05 * out["bilinear"].max()
    (g,) = torch.autograd.grad(out["bicubic"].sum(), gamma)
    assert torch.isfinite(g) and g != 0


def test_flat_epl_matches_lenstronomy():
    x, y = pixel_grid(16, 0.15)
    for e1, e2, gamma in [(0.55, 0.3, 1.7), (-0.1, -0.75, 2.4)]:  # q ~ 0.2 and 0.14
        kw = [dict(theta_E=1.0, gamma=gamma, e1=e1, e2=e2, center_x=0.01, center_y=0.02)]
        ax, ay = deflection(x, y, ["EPL"], kw)
        rx, ry = LensModel(["EPL"]).alpha(x.numpy(), y.numpy(), kw)
        assert max(np.abs(ax.numpy() - rx).max(), np.abs(ay.numpy() - ry).max()) < 1e-6


@pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex")
def test_compiled_image_matches_eager():
    from sourcelens.lensing import compiled_image

    sim = LensingSimulator(8, 0.2, 2, psf=torch.tensor(gaussian_kernel(3, 0.8)), batch_chunk=2)
    rng = np.random.default_rng(17)
    kws = [random_lens(["SIE", "SHEAR"], rng) for _ in range(2)]  # one chunk: one compilation
    lens = [{k: torch.tensor([kw[i][k] for kw in kws], dtype=torch.float64) for k in kws[0][i]} for i in range(2)]
    light = [dict(image=torch.tensor(np.stack([smooth_source(12, rng) for _ in range(2)])), pixel_scale=0.15)]
    fn = compiled_image(sim, ["SIE", "SHEAR"], ["PIXELATED"], dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(fn(lens, light), sim.image(["SIE", "SHEAR"], lens, ["PIXELATED"], light),
                                   rtol=0, atol=1e-12)
