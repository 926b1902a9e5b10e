"""Shared fixtures: paths to the repository and to the real COSMOS samples shipped with sourcelens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GALAXIES = Path(os.environ.get("SOURCELENS_GALAXIES", REPO.parent / "shared" / "galaxies"))


def _shipped(name: str) -> Path:
    from sourcelens.samples import sample_dir

    return sample_dir(name)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def btk_dir() -> Path:
    """100 real F814W COSMOS stamps with PSFs (no selection file): the sample shipped with sourcelens."""
    return _shipped("cosmos_btk_ext26")


@pytest.fixture
def example_params_dir() -> Path:
    """GalSim's 23.5 example catalogue with fits and selection files, no galaxy images (shipped)."""
    return _shipped("cosmos23.5_example_params")


@pytest.fixture
def stamp_cfg():
    from sourcelens.config import validate_config

    return validate_config({})["stamps"]


def blobs(rng, n, size=32):
    """Elliptical Gaussian galaxies (n, size, size) with random sizes, shapes and small offsets, peak ≈ 1."""
    import numpy as np

    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        s, q, phi = rng.uniform(2, 5), rng.uniform(0.4, 1), rng.uniform(0, np.pi)
        dx, dy = rng.uniform(-1.5, 1.5, 2)
        xr = (x - dx) * np.cos(phi) + (y - dy) * np.sin(phi)
        yr = -(x - dx) * np.sin(phi) + (y - dy) * np.cos(phi)
        out[i] = np.exp(-0.5 * (xr**2 + (yr / q) ** 2) / s**2)
    return out


@pytest.fixture(scope="session")
def blob_vae():
    """A small VAE (32×32, 6 latents) trained for a second on Gaussian blobs: a galaxy-like decoder whose
    images are known truths for fits."""
    import numpy as np
    import torch

    from sourcelens.models import VAE

    torch.manual_seed(3)
    torch.set_num_threads(1)
    model = VAE(image_size=32, latent_dim=6, widths=(8, 16, 32))
    x = torch.from_numpy(blobs(np.random.default_rng(5), 512))[:, None]
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(250):
        xb = x[torch.randint(0, len(x), (32,))]
        rec, mu, logvar = model(xb)
        loss = ((rec - xb) ** 2).sum((1, 2, 3)).mean() + 0.01 * model.kl_divergence(mu, logvar).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
