"""sourcelens.lensing maps against lenstronomy and analytic results."""

from __future__ import annotations

import numpy as np
import torch
from lenstronomy.LensModel.lens_model import LensModel

from sourcelens.lensing import SourceGrid, pixel_grid
from sourcelens.lensing.maps import (
    caustics, convergence, convergence_mask, critical_curves, magnification, shear,
)

LENS = (["EPL", "SHEAR"], [dict(theta_E=1.1, gamma=2.1, e1=0.12, e2=-0.1, center_x=0.02, center_y=-0.04),
                           dict(gamma1=0.05, gamma2=-0.02)])


def test_convergence_shear_magnification_match_lenstronomy():
    x, y = pixel_grid(20, 0.17)
    x, y = x + 0.013, y - 0.007  # stay off the lens centre
    ref = LensModel(LENS[0])
    xn, yn = x.numpy(), y.numpy()
    np.testing.assert_allclose(convergence(x, y, *LENS).numpy(), ref.kappa(xn, yn, LENS[1]), rtol=1e-6, atol=1e-8)
    g1, g2 = shear(x, y, *LENS)
    r1, r2 = ref.gamma(xn, yn, LENS[1])
    np.testing.assert_allclose(g1.numpy(), r1, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g2.numpy(), r2, rtol=1e-6, atol=1e-8)
    mu, rmu = magnification(x, y, *LENS).numpy(), ref.magnification(xn, yn, LENS[1])
    ok = np.abs(rmu) < 100
    np.testing.assert_allclose(mu[ok], rmu[ok], rtol=1e-6)


def test_batched_magnification():
    x, y = pixel_grid(8, 0.3)
    kw = [dict(theta_E=torch.tensor([0.8, 1.2], dtype=torch.float64))]
    mu = magnification(x + 0.01, y, ["SIS"], kw)
    assert mu.shape == (2, 8, 8)
    one = magnification(x + 0.01, y, ["SIS"], [dict(theta_E=1.2)])
    torch.testing.assert_close(mu[1], one)


def test_sis_critical_curve_is_einstein_ring_and_caustic_a_point():
    curves = critical_curves(["SIS"], [dict(theta_E=1.0)], 40, 0.075)
    r = np.concatenate([np.hypot(c[:, 0], c[:, 1]) for c in curves])
    assert np.abs(r - 1.0).max() < 5e-3
    cau = np.concatenate(caustics(curves, ["SIS"], [dict(theta_E=1.0)]))
    assert np.hypot(cau[:, 0], cau[:, 1]).max() < 5e-3


def test_caustics_lie_where_rays_fold():
    curves = critical_curves(*LENS, 48, 0.075)
    assert len(curves) >= 1
    x = torch.tensor(np.concatenate(curves))
    mu = magnification(x[:, 0:1], x[:, 1:2], *LENS)  # (K, 1) "grid"
    assert np.median(np.abs(mu.numpy())) > 50  # 1/mu ~ 0 on the curves


def test_convergence_mask_covers_inner_source_plane_only():
    grid = SourceGrid((40, 40), 0.1)
    mask = convergence_mask(*LENS, 40, 0.08, grid)
    assert mask[18:22, 18:22].all()  # around the caustics: multiply imaged
    assert not mask[0].any() and not mask[:, 0].any()  # 2 arcsec away: outside the image
