"""Priors of simulation parameters, as written in the config (``definitions/prior`` of the schema).

A prior spec is one of::

    1.2                                   # fixed value
    {uniform: [low, high]}                # uniform on [low, high]
    {normal: [mean, sigma]}               # normal
    {normal: [mean, sigma], clip: [low, high]}   # normal truncated to [low, high]
    {log10_uniform: [low, high]}          # 10**U(low, high): log-uniform on [10**low, 10**high]

``clip`` gives a *truncated* normal (as if out-of-range draws were redrawn), sampled exactly by
the inverse CDF with one uniform number per value, so there is no pile-up at the bounds and the
number of random draws per call depends only on ``size`` (reproducible streams). Units are those
of the parameter (arcsec for angles and positions, dimensionless otherwise).
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping

import numpy as np
from scipy import special

__all__ = ["sample_prior", "check_prior", "prior_bounds"]


def _pair(value: Any, name: str, key: str) -> tuple[float, float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"prior '{name}': '{key}' must be a list of two numbers, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"prior '{name}': '{key}' must be finite, got {value!r}")
    return lo, hi


def check_prior(spec: Any, name: str = "<parameter>") -> dict[str, Any]:
    """Validate a prior spec and return it in normal form ``{"kind": ..., ...}``.

    Raises ValueError naming the parameter if the spec is malformed.
    """
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        value = float(spec)
        if not np.isfinite(value):
            raise ValueError(f"prior '{name}': fixed value must be finite, got {spec!r}")
        return {"kind": "fixed", "value": value}
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"prior '{name}': expected a number, {{uniform: [lo, hi]}}, {{log10_uniform: [lo, hi]}} or "
            f"{{normal: [mu, sigma], clip: [lo, hi]}}, got {spec!r}"
        )
    keys = set(spec)
    if keys == {"uniform"}:
        lo, hi = _pair(spec["uniform"], name, "uniform")
        if lo > hi:
            raise ValueError(f"prior '{name}': uniform low {lo:g} is above high {hi:g}")
        return {"kind": "uniform", "low": lo, "high": hi}
    if keys == {"log10_uniform"}:
        lo, hi = _pair(spec["log10_uniform"], name, "log10_uniform")
        if lo > hi:
            raise ValueError(f"prior '{name}': log10_uniform low {lo:g} is above high {hi:g}")
        return {"kind": "log10_uniform", "low": lo, "high": hi}
    if keys in ({"normal"}, {"normal", "clip"}):
        mu, sigma = _pair(spec["normal"], name, "normal")
        if sigma < 0:
            raise ValueError(f"prior '{name}': normal sigma must be >= 0, got {sigma:g}")
        out: dict[str, Any] = {"kind": "normal", "mean": mu, "sigma": sigma, "clip": None}
        if "clip" in spec:
            lo, hi = _pair(spec["clip"], name, "clip")
            if lo > hi:
                raise ValueError(f"prior '{name}': clip low {lo:g} is above high {hi:g}")
            if sigma == 0 and not lo <= mu <= hi:
                raise ValueError(f"prior '{name}': sigma is 0 and the mean {mu:g} is outside clip [{lo:g}, {hi:g}]")
            out["clip"] = (lo, hi)
        return out
    raise ValueError(
        f"prior '{name}': expected exactly one of 'uniform', 'log10_uniform' or 'normal' (with optional 'clip'), "
        f"got keys {sorted(map(str, keys))}"
    )


def prior_bounds(spec: Any, name: str = "<parameter>") -> tuple[float, float]:
    """The support [low, high] of a prior (±inf for an unclipped normal)."""
    p = check_prior(spec, name)
    if p["kind"] == "fixed":
        return p["value"], p["value"]
    if p["kind"] == "uniform":
        return p["low"], p["high"]
    if p["kind"] == "log10_uniform":
        return 10.0 ** p["low"], 10.0 ** p["high"]
    if p["sigma"] == 0:
        return p["mean"], p["mean"]
    return p["clip"] if p["clip"] is not None else (-np.inf, np.inf)


def _truncated_normal(mu: float, sigma: float, lo: float, hi: float, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of N(mu, sigma) truncated to [lo, hi] from uniforms ``u`` in [0, 1)."""
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    # Work in the tail where the CDF is small, for precision (mirror if both bounds are > 0).
    flip = a > 0
    if flip:
        a, b = -b, -a
    pa, pb = special.ndtr(a), special.ndtr(b)
    z = special.ndtri(pa + u * (pb - pa))
    z = np.clip(z, a, b)
    if flip:
        z = -z
    return mu + sigma * z


def sample_prior(spec: Any, rng: np.random.Generator, size: int, name: str = "<parameter>") -> np.ndarray:
    """Draw ``size`` values (float64 array) from a prior spec with the numpy Generator ``rng``.

    A fixed value uses no random numbers; every other spec uses exactly ``size`` draws.
    Raises ValueError naming ``name`` for a malformed spec.
    """
    p = check_prior(spec, name)
    size = int(size)
    if p["kind"] == "fixed":
        return np.full(size, p["value"], dtype=float)
    if p["kind"] == "uniform":
        return rng.uniform(p["low"], p["high"], size) if p["high"] > p["low"] else (
            np.full(size, p["low"], dtype=float) + 0.0 * rng.uniform(size=size)
        )
    if p["kind"] == "log10_uniform":
        return 10.0 ** (rng.uniform(p["low"], p["high"], size) if p["high"] > p["low"] else (
            np.full(size, p["low"], dtype=float) + 0.0 * rng.uniform(size=size)))
    mu, sigma = p["mean"], p["sigma"]
    if p["clip"] is None:
        return rng.normal(mu, sigma, size) if sigma > 0 else np.full(size, mu) + 0.0 * rng.normal(size=size)
    lo, hi = p["clip"]
    u = rng.uniform(size=size)
    if sigma == 0 or lo == hi:
        return np.clip(np.full(size, mu, dtype=float), lo, hi)
    return _truncated_normal(mu, sigma, lo, hi, u)
