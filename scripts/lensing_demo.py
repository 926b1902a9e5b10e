"""Snakemake script: figures of sourcelens.lensing (lens models, magnification, backward maps).

params: seed. output: models, magnification, backward (PNG). log: one file.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821

from sourcelens.logs import log_to_file  # noqa: E402

logger = log_to_file(snakemake.log[0])  # noqa: F821

import torch  # noqa: E402

from sourcelens.config import rng_for  # noqa: E402
from sourcelens.io import save_figure  # noqa: E402
from sourcelens.lensing import (  # noqa: E402
    LensingSimulator, OverlapOperator, SourceGrid, naive_scatter, pixel_grid, ray_shoot,
)
from sourcelens.lensing.plots import plot_backward, plot_lens_models, plot_magnification  # noqa: E402

rng = rng_for(int(snakemake.params.seed), "lensing_demo")  # noqa: F821


def demo_source(m: int, scale: float) -> torch.Tensor:
    """A clumpy elliptical galaxy (flux per pixel) on an m x m grid, zero at the border."""
    c = (torch.arange(m, dtype=torch.float64) - (m - 1) / 2) * scale
    y, x = torch.meshgrid(c, c, indexing="ij")
    x0, y0 = rng.uniform(-0.08, 0.08, 2)
    ang = rng.uniform(0, torch.pi)
    xr = (x - x0) * torch.cos(torch.tensor(ang)) + (y - y0) * torch.sin(torch.tensor(ang))
    yr = -(x - x0) * torch.sin(torch.tensor(ang)) + (y - y0) * torch.cos(torch.tensor(ang))
    img = torch.exp(-((xr**2 + (yr / 0.6) ** 2).sqrt() / 0.12))
    for _ in range(4):
        cx, cy = rng.uniform(-0.25, 0.25, 2)
        img = img + rng.uniform(0.3, 0.8) * torch.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / 0.03**2)
    img[:2], img[-2:], img[:, :2], img[:, -2:] = 0, 0, 0, 0
    return img * scale**2


def jitter(v: float, s: float = 0.03) -> float:
    return float(v + rng.uniform(-s, s))


theta_e = jitter(1.0, 0.1)
cases = [
    ("SIS", ["SIS"], [dict(theta_E=theta_e, center_x=0.0, center_y=0.0)]),
    ("SIE", ["SIE"], [dict(theta_E=theta_e, e1=jitter(0.15), e2=jitter(-0.1))]),
    ("EPL (gamma=2.3)", ["EPL"], [dict(theta_E=theta_e, gamma=2.3, e1=jitter(0.1), e2=jitter(0.15))]),
    ("SIE + shear", ["SIE", "SHEAR"], [dict(theta_E=theta_e, e1=jitter(-0.1), e2=jitter(0.1)),
                                       dict(gamma1=jitter(0.06, 0.01), gamma2=jitter(-0.04, 0.01))]),
]
src_scale, m = 0.015, 64
source = demo_source(m, src_scale)
logger.info("lens models figure")
save_figure(plot_lens_models(source, src_scale, cases), snakemake.output.models)  # noqa: F821

name, lens_models, kwargs_lens = cases[3]
logger.info("magnification figure (%s)", name)
save_figure(plot_magnification(lens_models, kwargs_lens, title=f"({name})"),
            snakemake.output.magnification)  # noqa: F821

logger.info("backward mapping figure")
n_pix, pixel_scale = 80, 0.04  # traced pixels sparser than source cells: naive holes
image = LensingSimulator(n_pix, pixel_scale, 4).image(
    lens_models, kwargs_lens, ["PIXELATED"], [dict(image=source, pixel_scale=src_scale)])
grid = SourceGrid((m, m), src_scale)
bx, by = ray_shoot(*pixel_grid(n_pix, pixel_scale), lens_models, kwargs_lens)
naive, _ = naive_scatter(image, bx, by, grid, pixel_scale)
op = OverlapOperator(lens_models, kwargs_lens, n_pix, pixel_scale, grid, refine=4, refine_radius=0.3)
save_figure(plot_backward(image, pixel_scale, source, naive, op.to_source(image), grid, op.mask),
            snakemake.output.backward)  # noqa: F821
logger.info("done")
