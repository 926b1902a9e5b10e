"""Image-quality metrics between the data, a model and (where known) the noiseless truth, and their summaries.

Every per-image record compares a *model* image (a reconstruction or a fit) with the *data* it models (the
observed stamp, noise included) and, where the galaxy was drawn, with its noiseless *truth*:

=============================  =========================================================================
``chi2``, ``chi2_nu``          Σ((data − model)/σ)² and χ²/ν with ν = N_pix − n_params, σ the data's noise
                               (a scalar or a per-pixel map); ≈ 1 when the model explains the data to the
                               noise. NaN without σ. :func:`chi2` is the project's one χ², numpy or torch.
``mse``, ``ssim``, ``psnr``    against the data. SSIM (Wang et al. 2004) with a Gaussian window of σ = 1.5
                               pixels (11 taps), K1 = 0.01, K2 = 0.03, population covariances, averaged over
                               the window positions inside the image; ``data_range`` = max − min of the
                               reference. The one SSIM convention of the project: every table
                               (scikit-image, :func:`ssim`) and the training loss (torch, :func:`ssim_torch`,
                               the same numbers) use it. PSNR in dB (scikit-image), same data range.
``ssim_ceiling``               the SSIM a perfect model would score against data with this noise: the mean
                               SSIM of (model + noise) against the model (:func:`ssim_noise_ceiling`), the
                               noise with the stamp's σ and its pixel-to-pixel correlation measured on the
                               background of data − model (:func:`stamp_noise_correlation`); 1 for
                               noiseless data. Against noisy data SSIM is capped by the noise, so a model is
                               judged by ``ssim_fraction`` = ssim / ssim_ceiling.
``peak_rel_error``             (max model − max data) / max data
``flux_rel_error``             (Σ model − Σ data) / Σ data
``e1_data, e2_data``           HSM adaptive-moment ellipticity of the data and of the model (GalSim
``e1_model, e2_model``         ``FindAdaptiveMom``, ``observed_shape.e1/e2``: the *distortion*
                               (a²−b²)/(a²+b²) convention, not the reduced shear); NaN with a logged warning
                               where HSM fails
``ellipticity_error``          |e_model − e_data|
``mse_truth``, ``ssim_truth``  against the noiseless truth where it is known (drawn galaxies), else NaN;
``ellipticity_error_truth``    |e_model − e_truth|
=============================  =========================================================================

:func:`summarise` turns a table of per-image metrics into mean, median, std and the 16th/84th percentiles per
metric (NaN values ignored); :func:`by_kind` runs a summary per source kind, real galaxies first.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger("sourcelens.metrics")

METRIC_COLUMNS = (
    "chi2", "chi2_nu", "mse", "ssim", "ssim_ceiling", "ssim_fraction", "psnr", "peak_rel_error", "flux_rel_error",
    "e1_data", "e2_data", "e1_model", "e2_model", "ellipticity_error", "mse_truth", "ssim_truth",
    "ellipticity_error_truth",
)


def mse(true: np.ndarray, model: np.ndarray) -> float:
    """Mean squared error."""
    true, model = _pair(true, model)
    return float(np.mean((model - true) ** 2))


def _data_range(true: np.ndarray) -> float:
    """max − min of the true image (1.0 if the image is constant)."""
    true = np.asarray(true, dtype=float)
    rng = float(np.max(true) - np.min(true))
    return rng if rng > 0 else 1.0


SSIM_SIGMA = 1.5          # Gaussian window σ (pixels)
SSIM_WINDOW = 11          # taps of the window: 2·⌊3.5σ + 0.5⌋ + 1, as scikit-image truncates it
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim(true: np.ndarray, model: np.ndarray, data_range: float | None = None) -> float:
    """Structural similarity of one image pair (scikit-image; the convention of the module docstring),
    ``data_range`` by default max − min of the true image."""
    from skimage.metrics import structural_similarity

    true, model = _pair(true, model)
    if min(true.shape) < SSIM_WINDOW:
        raise ValueError(f"images {true.shape} are smaller than the SSIM window ({SSIM_WINDOW} pixels)")
    return float(structural_similarity(true, model, data_range=data_range or _data_range(true),
                                       gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False,
                                       K1=SSIM_K1, K2=SSIM_K2))


def ssim_map(x, y, data_range: float = 1.0):
    """SSIM map (B, C, H−10, W−10) of torch images (B, C, H, W) over the window positions inside the
    image: the convention of :func:`ssim`, differentiable (a training loss)."""
    import torch
    from torch.nn import functional as F

    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"images {tuple(x.shape[-2:])} are smaller than the SSIM window ({SSIM_WINDOW} pixels)")
    c = x.shape[1]
    t = torch.arange(SSIM_WINDOW, dtype=x.dtype, device=x.device) - (SSIM_WINDOW - 1) / 2
    w = torch.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    w = w / w.sum()
    wy = w.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    wx = w.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def filt(a):  # separable Gaussian, 'valid' (no padding)
        return F.conv2d(F.conv2d(a, wy, groups=c), wx, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim_torch(x, y, data_range: float = 1.0):
    """Mean SSIM per image (B,) of torch images (B, C, H, W): :func:`ssim` for a fixed ``data_range``,
    differentiable."""
    return ssim_map(x, y, data_range).flatten(1).mean(1)


def psnr(true: np.ndarray, model: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (scikit-image) with the true image's data range (inf for
    identical images)."""
    from skimage.metrics import peak_signal_noise_ratio

    true, model = _pair(true, model)
    if mse(true, model) == 0:
        return math.inf
    return float(peak_signal_noise_ratio(true, model, data_range=_data_range(true)))


def peak_rel_error(true: np.ndarray, model: np.ndarray) -> float:
    """(max model − max true) / max true."""
    true, model = _pair(true, model)
    peak = float(np.max(true))
    return float((np.max(model) - peak) / peak) if peak != 0 else math.nan


def flux_rel_error(true: np.ndarray, model: np.ndarray) -> float:
    """(Σ model − Σ true) / Σ true."""
    true, model = _pair(true, model)
    flux = float(np.sum(true))
    return float((np.sum(model) - flux) / flux) if flux != 0 else math.nan


def hsm_ellipticity(image: np.ndarray, label: str = "image") -> tuple[float, float]:
    """(e1, e2) of the HSM adaptive-moment observed shape (distortion convention).

    Returns (nan, nan) and logs a warning when GalSim's HSM fails to converge.
    """
    import galsim

    arr = np.ascontiguousarray(np.asarray(image, dtype=np.float64))
    try:
        moments = galsim.hsm.FindAdaptiveMom(galsim.Image(arr, scale=1.0), strict=True)
    except (galsim.hsm.GalSimHSMError, RuntimeError, ValueError) as err:
        log.warning("HSM adaptive moments failed for %s: %s", label, str(err).strip().splitlines()[0][:200])
        return math.nan, math.nan
    shape = moments.observed_shape
    return float(shape.e1), float(shape.e2)


def chi2(data, model, sigma, mask=None):
    """Σ((data − model)/σ)² over the last two axes (an image, or a stack (…, H, W) → one per image);
    numpy arrays or torch tensors; σ a scalar or broadcastable maps, ``mask`` optional pixel weights."""
    r2 = ((data - model) / sigma) ** 2
    if mask is not None:
        r2 = r2 * mask
    out = r2.sum((-2, -1)) if hasattr(r2, "dim") else np.sum(r2, axis=(-2, -1))
    return float(out) if isinstance(out, np.generic) or (isinstance(out, np.ndarray) and out.ndim == 0) else out


def reduced_chi2(data: np.ndarray, model: np.ndarray, sigma: float | np.ndarray, n_params: int = 0) -> float:
    """χ²/ν with ν = number of pixels − ``n_params`` (free parameters of the model)."""
    data, model = _pair(data, model)
    nu = data.size - int(n_params)
    if nu <= 0:
        raise ValueError(f"{n_params} free parameters leave no degrees of freedom for {data.size} pixels")
    sigma = np.asarray(sigma, dtype=float)
    if np.any(sigma <= 0):
        raise ValueError("sigma must be positive for a chi-squared")
    return chi2(data, model, sigma) / nu


NOISE_CORRELATION_LAG = 3     # pixels: the noise correlation measured out to this lag (HST drizzle: 1–2 pixels)
MIN_BACKGROUND_PIXELS = 256   # fewer background pixels than this: the noise is taken as white


def noise_correlation(residual: np.ndarray, mask: np.ndarray | None = None,
                      max_lag: int = NOISE_CORRELATION_LAG) -> np.ndarray:
    """The noise's correlation coefficients ρ(dy, dx) for |dy|, |dx| ≤ ``max_lag`` ((2L+1, 2L+1), ρ(0, 0) = 1)
    measured on ``residual`` (data − model: the noise where the model is right) over the ``mask`` pixels (the
    background), as the masked autocorrelation Σ r(x) r(x+d) / Σ m(x) m(x+d). Real HST stamps (drizzled, then
    resampled) have ρ(±1, 0) ≈ 0.5; drawn galaxies' white noise ≈ a delta."""
    r = np.asarray(residual, dtype=float)
    m = np.ones_like(r) if mask is None else np.asarray(mask, dtype=float)
    r = (r - np.sum(r * m) / max(np.sum(m), 1.0)) * m
    shape = (2 * r.shape[0], 2 * r.shape[1])          # zero padding: linear, not circular, correlation
    fr, fm = np.fft.rfft2(r, shape), np.fft.rfft2(m, shape)
    num = np.fft.irfft2(fr * np.conj(fr), shape)
    den = np.fft.irfft2(fm * np.conj(fm), shape)
    lags = np.r_[np.arange(-max_lag, 0), np.arange(0, max_lag + 1)]
    num, den = num[np.ix_(lags, lags)], np.maximum(den[np.ix_(lags, lags)], 1.0)
    cov = num / den
    return cov / cov[max_lag, max_lag] if cov[max_lag, max_lag] > 0 else _white(max_lag)


def _white(max_lag: int) -> np.ndarray:
    rho = np.zeros((2 * max_lag + 1,) * 2)
    rho[max_lag, max_lag] = 1.0
    return rho


def correlated_noise(shape: tuple[int, int], correlation: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian noise field of unit variance with the correlation coefficients ``correlation`` (as from
    :func:`noise_correlation`; None: white), drawn as white noise filtered by the square root of the power
    spectrum (negative power, from a truncated or noisy correlation, set to zero)."""
    white = rng.standard_normal(shape)
    if correlation is None:
        return white
    rho = np.asarray(correlation, dtype=float)
    lag = rho.shape[0] // 2
    kernel = np.zeros(shape)
    for dy in range(-lag, lag + 1):
        for dx in range(-lag, lag + 1):
            kernel[dy % shape[0], dx % shape[1]] += rho[dy + lag, dx + lag]
    power = np.clip(np.fft.fft2(kernel).real, 0.0, None)
    if power.mean() <= 0:
        return white
    power /= power.mean()                                # unit variance per pixel
    return np.fft.ifft2(np.fft.fft2(white) * np.sqrt(power)).real


def ssim_noise_ceiling(model: np.ndarray, sigma: float | np.ndarray, rng: np.random.Generator,
                       draws: int = 8, correlation: np.ndarray | None = None, data_range: float | None = None
                       ) -> float:
    """The SSIM a perfect model would score against data with Gaussian noise ``sigma`` (a scalar or a map) and the
    noise's ``correlation`` (:func:`noise_correlation`; None: white): the mean over ``draws`` realisations of
    SSIM(model + noise, model); 1 for no noise. ``data_range``: that of the SSIM it is compared with (the
    observed data's; default each realisation's own), so that both share SSIM's constants and a model that misses
    the galaxy cannot exceed its ceiling. Correlated noise (drizzled HST stamps) lowers SSIM more than white noise of
    the same variance: its fluctuations are on the scale of the SSIM window."""
    model = np.asarray(model, dtype=float)
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), model.shape)
    if not np.all(np.isfinite(sig)) or not np.any(sig > 0):
        return 1.0
    return float(np.mean([ssim(model + correlated_noise(model.shape, correlation, rng) * sig, model, data_range)
                          for _ in range(int(draws))]))


def stamp_noise_correlation(data: np.ndarray, model: np.ndarray, sigma: float | np.ndarray,
                            max_lag: int = NOISE_CORRELATION_LAG) -> np.ndarray | None:
    """The correlation of a stamp's noise, measured on data − model in the background: the outer ring of the stamp
    (beyond 3/4 of the half-size, where a centred galaxy rarely reaches) where the model is below half the noise,
    so that light a model misses is not taken for correlated noise; None (white) when fewer than
    :data:`MIN_BACKGROUND_PIXELS` pixels are left."""
    model = np.asarray(model, dtype=float)
    ny, nx = model.shape
    y, x = np.mgrid[:ny, :nx]
    ring = np.hypot(y - (ny - 1) / 2, x - (nx - 1) / 2) > 0.375 * min(ny, nx)
    background = ring & (model < 0.5 * np.broadcast_to(np.asarray(sigma, dtype=float), model.shape))
    if np.count_nonzero(background) < MIN_BACKGROUND_PIXELS:
        return None
    return noise_correlation(np.asarray(data, dtype=float) - model, background, max_lag)


def image_metrics(
    data: np.ndarray, model: np.ndarray, *, sigma: float | np.ndarray | None = None, n_params: int = 0,
    truth: np.ndarray | None = None, label: str = "image", ceiling_rng: np.random.Generator | None = None,
    ceiling_draws: int = 8,
) -> dict[str, float]:
    """All metrics of one model of ``data`` as a dict (keys :data:`METRIC_COLUMNS`; see the module docstring).

    ``sigma`` None, or zero/non-finite, gives NaN χ² (and a ceiling of 1); ``truth`` None or all-NaN gives NaN
    truth metrics; the SSIM ceiling needs ``ceiling_rng`` (NaN without it).
    """
    data, model = _pair(data, model)
    e1_d, e2_d = hsm_ellipticity(data, f"{label} (data)")
    e1_m, e2_m = hsm_ellipticity(model, f"{label} (model)")
    out = {
        "chi2": math.nan, "chi2_nu": math.nan,
        "mse": mse(data, model), "ssim": ssim(data, model), "ssim_ceiling": math.nan, "ssim_fraction": math.nan,
        "psnr": psnr(data, model), "peak_rel_error": peak_rel_error(data, model),
        "flux_rel_error": flux_rel_error(data, model),
        "e1_data": e1_d, "e2_data": e2_d, "e1_model": e1_m, "e2_model": e2_m,
        "ellipticity_error": float(np.hypot(e1_m - e1_d, e2_m - e2_d)),
        "mse_truth": math.nan, "ssim_truth": math.nan, "ellipticity_error_truth": math.nan,
    }
    sig = None if sigma is None else np.asarray(sigma, dtype=float)
    noisy = sig is not None and bool(np.all(np.isfinite(sig)) and np.all(sig > 0))
    if noisy:
        out["chi2"] = float(chi2(data, model, sig))
        out["chi2_nu"] = reduced_chi2(data, model, sig, n_params)
    if ceiling_rng is not None:
        rho = stamp_noise_correlation(data, model, sig) if noisy else None
        out["ssim_ceiling"] = ssim_noise_ceiling(model, sig if noisy else 0.0, ceiling_rng, ceiling_draws, rho,
                                                 data_range=_data_range(data))
        out["ssim_fraction"] = out["ssim"] / out["ssim_ceiling"]
    if truth is not None and np.all(np.isfinite(truth)):
        truth = np.asarray(truth, dtype=float)
        e1_t, e2_t = hsm_ellipticity(truth, f"{label} (truth)")
        out.update(mse_truth=mse(truth, model), ssim_truth=ssim(truth, model),
                   ellipticity_error_truth=float(np.hypot(e1_m - e1_t, e2_m - e2_t)))
    return out


def batch_metrics(
    data: np.ndarray, model: np.ndarray, *, sigma: float | Sequence[float] | np.ndarray | None = None,
    n_params: int = 0, truth: np.ndarray | None = None, labels: Iterable[str] | None = None,
    ceiling_rng: np.random.Generator | None = None, ceiling_draws: int = 8,
) -> pd.DataFrame:
    """:func:`image_metrics` of stacks (N, H, W) of data and model images (and truths, NaN where unknown): one
    row per image. ``sigma``: None, a scalar, one value per image (N,), or per-pixel maps (N, H, W)."""
    data = np.asarray(data, dtype=float)
    model = np.asarray(model, dtype=float)
    if data.shape != model.shape or data.ndim != 3:
        raise ValueError(f"expected two (N, H, W) stacks of equal shape, got {data.shape} and {model.shape}")
    n = len(data)
    if sigma is None:
        sigmas: list = [None] * n
    else:
        s = np.asarray(sigma, dtype=float)
        sigmas = list(np.broadcast_to(s, (n,))) if s.ndim <= 1 else list(s)
    labels = list(labels) if labels is not None else [f"image {i}" for i in range(n)]
    rows = [
        image_metrics(data[i], model[i], sigma=sigmas[i], n_params=n_params,
                      truth=None if truth is None else truth[i], label=labels[i], ceiling_rng=ceiling_rng,
                      ceiling_draws=ceiling_draws)
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def by_kind(per: pd.DataFrame, summary: Callable[[pd.DataFrame], pd.DataFrame], bright_snr: float | None = None
            ) -> pd.DataFrame:
    """``summary`` of the rows of each source kind (column ``kind``), real galaxies first
    (:data:`sourcelens.names.SOURCE_KINDS` order), then, with ``bright_snr`` and an ``snr`` column, of each kind's
    galaxies at or above that signal-to-noise (``"<kind> S/N≥<bright_snr>"``: where the noise no longer hides a
    model's own errors), then of all rows (``"all"``); the group name leads each row as column ``kind``."""
    from .names import SOURCE_KINDS

    kinds = per["kind"].astype(str) if "kind" in per else pd.Series("all", index=per.index)
    present = [k for k in SOURCE_KINDS if (kinds == k).any()] + sorted(set(kinds) - set(SOURCE_KINDS))
    groups = [(k, per[kinds == k]) for k in present]
    if bright_snr is not None and "snr" in per:
        for k in present:
            bright = per[(kinds == k) & (per["snr"] >= bright_snr)]
            if len(bright):
                groups.append((f"{k} S/N≥{bright_snr:g}", bright))
    groups.append(("all", per))
    parts = [summary(rows).assign(kind=name) for name, rows in groups]
    out = pd.concat(parts, ignore_index=True)
    return out[["kind", *[c for c in out.columns if c != "kind"]]]


def summarise(df: pd.DataFrame, metrics: Sequence[str] | None = None, by: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, median, std, 16th and 84th percentiles and count (non-NaN) per metric.

    ``metrics``: the columns to summarise (default: every numeric column present of
    :data:`METRIC_COLUMNS`, else every numeric column). ``by``: optional grouping column(s)
    (e.g. the fit method); the result then has those columns first. Infinite values (PSNR of
    identical images) count as missing.
    Returns one row per (group, metric): columns [*by, metric, mean, median, std, p16, p84, n].
    """
    if metrics is None:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        metrics = [c for c in METRIC_COLUMNS if c in numeric] or numeric
    by_cols = [] if by is None else ([by] if isinstance(by, str) else list(by))
    groups = [((), df)] if not by_cols else df.groupby(by_cols, sort=False)
    rows = []
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        for name in metrics:
            values = pd.to_numeric(sub[name], errors="coerce").to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            row = dict(zip(by_cols, key))
            row["metric"] = name
            if values.size:
                row.update(mean=float(np.mean(values)), median=float(np.median(values)),
                           std=float(np.std(values, ddof=1)) if values.size > 1 else 0.0,
                           p16=float(np.percentile(values, 16)), p84=float(np.percentile(values, 84)))
            else:
                row.update(mean=math.nan, median=math.nan, std=math.nan, p16=math.nan, p84=math.nan)
            row["n"] = int(values.size)
            rows.append(row)
    return pd.DataFrame(rows, columns=[*by_cols, "metric", "mean", "median", "std", "p16", "p84", "n"])


def _pair(true: np.ndarray, model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(true, dtype=float)
    model = np.asarray(model, dtype=float)
    if true.shape != model.shape:
        raise ValueError(f"true and model images differ in shape: {true.shape} vs {model.shape}")
    return true, model


def describe(summary: pd.DataFrame, metrics: Mapping[str, str] | None = None) -> str:
    """A short one-line text of medians (for logs): 'mse=… ssim=…'."""
    parts = []
    for _, row in summary.iterrows():
        if metrics is None or row["metric"] in metrics:
            parts.append(f"{row['metric']}={row['median']:.4g}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------
# shear bias and binned residuals (study 003)


def shear_bias(e_true: np.ndarray, e_out: np.ndarray, n_bootstrap: int = 200,
               rng: np.random.Generator | None = None) -> dict[str, float]:
    """Multiplicative and additive bias (m, c) of measured ellipticities: the least-squares line
    e_out = (1 + m) e_true + c over the finite pairs, with 1σ errors ``m_err``, ``c_err`` from the standard
    deviation of (m, c) over ``n_bootstrap`` resamplings of the objects (with replacement); ``n`` pairs used.
    NaN everywhere with fewer than 3 pairs or no spread in e_true (errors NaN without ``n_bootstrap``)."""
    x, y = np.asarray(e_true, dtype=float).ravel(), np.asarray(e_out, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {"m": math.nan, "m_err": math.nan, "c": math.nan, "c_err": math.nan, "n": int(x.size)}

    def fit(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
        dx = xs - xs.mean()
        var = float(np.dot(dx, dx))
        if var <= 0 or np.ptp(xs) <= 1e-12 * max(1.0, float(np.max(np.abs(xs)))):
            return math.nan, math.nan
        slope = float(np.dot(dx, ys - ys.mean())) / var
        return slope - 1.0, float(ys.mean() - slope * xs.mean())

    if x.size < 3:
        return out
    out["m"], out["c"] = fit(x, y)
    if n_bootstrap and np.isfinite(out["m"]):
        rng = rng if rng is not None else np.random.default_rng(0)
        draws = np.array([fit(x[idx], y[idx]) for idx in rng.integers(0, x.size, (int(n_bootstrap), x.size))])
        good = np.all(np.isfinite(draws), axis=1)
        if good.sum() > 1:
            out["m_err"], out["c_err"] = (float(v) for v in np.std(draws[good], axis=0, ddof=1))
    return out


def bootstrap_error(values: np.ndarray, statistic: Callable[[np.ndarray], float] = np.median,
                    n_bootstrap: int = 200, rng: np.random.Generator | None = None) -> float:
    """1σ error of ``statistic`` of the finite ``values``: the standard deviation over ``n_bootstrap``
    resamplings with replacement (NaN with fewer than 2 values)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2 or not n_bootstrap:
        return math.nan
    rng = rng if rng is not None else np.random.default_rng(0)
    return float(np.std([statistic(v[idx]) for idx in rng.integers(0, v.size, (int(n_bootstrap), v.size))], ddof=1))


def binned_statistics(x: np.ndarray, values: np.ndarray, edges: Sequence[float]) -> pd.DataFrame:
    """Median and scatter of ``values`` in bins of ``x`` (``edges``, left-closed; the last bin also closed):
    one row per bin with ``bin_lo``, ``bin_hi``, ``n`` (finite pairs), ``median``, ``scatter`` (half the 16–84th
    percentile range: σ for a Gaussian, robust to outliers), ``p16``, ``p84`` and ``median_abs`` (median |value|);
    NaN in empty bins."""
    x, v = np.asarray(x, dtype=float).ravel(), np.asarray(values, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(v)
    x, v = x[ok], v[ok]
    edges = np.asarray(edges, dtype=float)
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sel = (x >= lo) & ((x <= hi) if i == len(edges) - 2 else (x < hi))
        vals = v[sel]
        if vals.size:
            p16, med, p84 = np.percentile(vals, [16, 50, 84])
            row = {"median": float(med), "scatter": float(p84 - p16) / 2, "p16": float(p16), "p84": float(p84),
                   "median_abs": float(np.median(np.abs(vals)))}
        else:
            row = dict.fromkeys(("median", "scatter", "p16", "p84", "median_abs"), math.nan)
        rows.append({"bin_lo": float(lo), "bin_hi": float(hi), "n": int(vals.size), **row})
    return pd.DataFrame(rows, columns=["bin_lo", "bin_hi", "n", "median", "scatter", "p16", "p84", "median_abs"])
