"""Configuration: loading and validating against the workflow schema, and derived seeds.

The workflow validates its config with ``snakemake.utils.validate``; the same schema is
used here so that notebooks and the CLI see exactly the same defaults and errors.
"""

from __future__ import annotations

import copy
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

#: The config schema, shipped inside the package (``workflow/schemas/config.schema.yaml`` links to it).
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names it."""


def _default_filling_validator(schema: Mapping[str, Any]):
    """A Draft 2020-12 validator that fills defaults while validating (as snakemake's validate does)."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, subschema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})(schema)


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate ``config`` against the schema, fill defaults, and return a new dict.

    Raises ConfigError naming the offending key path and the reason.
    """
    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    config = copy.deepcopy(config)
    validator = _default_filling_validator(schema)
    # defaults are filled during the first pass; report errors from a second, complete pass
    list(validator.iter_errors(config))
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = "/".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"config key '{where}': {err.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return config


def check_config(config: Mapping[str, Any]) -> dict:
    """Every check the workflow makes before any job runs; returns the config with defaults filled.

    The schema (:func:`validate_config`), then the rules across keys that the schema cannot state:
    split fractions summing to 1; a COSMOS catalogue (shipped sample or directory) where ``cosmos`` or
    ``cosmos_fit`` galaxies are asked for; lensed source kinds that the sources provide; a stamp size the VAE can halve once per width (``vae.widths``); shapelet orders the
    stamp can resolve (``fit.shapelet_n_max``); each super-resolution set merged over its preset
    (:func:`sr_set_config`); the sets, lens models and noise variants of ``super_resolution`` among those
    simulated (null: all of them, filled in). The Snakefile and ``sourcelens check-config`` both call
    it. Raises :class:`ConfigError` naming every offending key.
    """
    cfg = validate_config(dict(config))
    problems: list[str] = []

    fractions = cfg["split"]["fractions"]
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        problems.append(f"config key 'split/fractions': train + val + test must sum to 1, got {total:g}")

    sources = cfg["sources"]
    for kind in ("cosmos", "cosmos_fit"):
        if kind not in sources["kinds"]:
            continue
        block = sources[kind]
        if not block["dir"] and not block["sample"]:
            problems.append(f"config keys 'sources/{kind}/dir' and 'sources/{kind}/sample': source kind '{kind}' "
                            "needs a GalSim RealGalaxyCatalog directory (e.g. from `galsim_download_cosmos -s 25.2`)"
                            " or a shipped sample")
            continue
        from .catalog import CatalogueError, find_catalogue_file
        from .samples import catalogue_dir

        try:
            find_catalogue_file(catalogue_dir(block), block["file_name"])
        except CatalogueError as err:
            problems.append(f"config key 'sources/{kind}/dir': {str(err).replace('sources/cosmos/', f'sources/{kind}/')}")

    if cfg["simulate"]["source_kinds"] is None:
        cfg["simulate"]["source_kinds"] = default_lensed_kinds(sources["kinds"])
    lensed = [k for k in cfg["simulate"]["source_kinds"] if k in sources["kinds"]]
    if not lensed:
        problems.append(
            f"config keys 'simulate/source_kinds' and 'sources/kinds': none of the lensed source kinds "
            f"{cfg['simulate']['source_kinds']} is among the configured sources {sources['kinds']}")
    pair_models = cfg["simulate"]["pairs"]["lens_models"]
    for net in ("cnn", "unet"):
        if cfg[net]["lens_model"] not in pair_models:
            problems.append(f"config keys '{net}/lens_model' and 'simulate/pairs/lens_models': the {net} learns from "
                            f"{cfg[net]['lens_model']} pairs, which are not simulated ({pair_models})")
    num_pix = cfg["simulate"]["pairs"]["num_pix"]
    halvings = {"unet/widths": len(cfg["unet"]["widths"]) - 1}
    if cfg["cnn"]["arch"] == "study":
        halvings["cnn/widths"] = len(cfg["cnn"]["widths"])
    for key, n in halvings.items():
        if num_pix % 2**n:
            problems.append(f"config keys 'simulate/pairs/num_pix' and '{key}': the network halves the {num_pix}-"
                            f"pixel image {n} times, so num_pix must be divisible by {2**n}")
    blocks, cnn_widths = cfg["cnn"]["blocks"], cfg["cnn"]["widths"]
    if isinstance(blocks, list) and len(blocks) != len(cnn_widths):
        problems.append(f"config keys 'cnn/blocks' and 'cnn/widths': {len(blocks)} numbers of residual blocks "
                        f"{blocks} for {len(cnn_widths)} widths {cnn_widths} (give one per width, or one number)")
    size, widths = cfg["stamps"]["size"], cfg["vae"]["widths"]
    if size % 2 ** len(widths):
        problems.append(
            f"config keys 'stamps/size' and 'vae/widths': the VAE halves the stamp once per width "
            f"({len(widths)} widths), so the stamp size must be divisible by {2 ** len(widths)}; got {size} "
            f"(use e.g. {max(2 ** len(widths), size - size % 2 ** len(widths))}, or fewer widths)")
    too_fine = [n for n in cfg["fit"]["shapelet_n_max"] if n + 1 > 2 * size / 3]
    if too_fine:
        problems.append(
            f"config keys 'fit/shapelet_n_max' and 'stamps/size': shapelet orders {too_fine} are finer than a "
            f"{size}-pixel stamp resolves (n_max + 1 must be at most 2/3 of the stamp size)")
    problems += _sr_set_problems(cfg["simulate"]["sr"])
    problems += _super_resolution_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return cfg


def sr_set_config(sr_cfg: Mapping[str, Any], name: str) -> dict:
    """The full config of the super-resolution set ``name`` (``sr_cfg`` = ``simulate.sr``, defaults filled).

    The set's ``preset`` (``simulate.sr.presets``) with the set's other keys merged over it (nested keys
    such as single priors override one by one); ``n_samples`` null takes ``simulate.sr.n_samples``, a partial
    one overrides those splits. Adds ``set``, ``preset``, ``lens_models`` and ``noise_variants``: what
    :func:`sourcelens.simulate.simulate_sr` takes.
    """
    sets = sr_cfg["sets"]
    if name not in sets:
        raise ConfigError(f"config key 'simulate/sr/sets': no super-resolution set {name!r} (configured: "
                          f"{', '.join(sets)})")
    overrides = copy.deepcopy(dict(sets[name]))
    preset = overrides.pop("preset")
    if preset not in sr_cfg["presets"]:
        raise ConfigError(f"config key 'simulate/sr/sets/{name}/preset': unknown preset {preset!r} "
                          f"(allowed: {', '.join(sr_cfg['presets'])})")
    merged = deep_update(copy.deepcopy(dict(sr_cfg["presets"][preset])), overrides)
    n_samples = copy.deepcopy(dict(sr_cfg["n_samples"]))
    deep_update(n_samples, {k: v for k, v in (merged.get("n_samples") or {}).items() if v is not None})
    merged.update(n_samples=n_samples, set=name, preset=preset, lens_models=list(sr_cfg["lens_models"]),
                  noise_variants=list(sr_cfg["noise_variants"]))
    return merged


def _sr_set_problems(sr_cfg: Mapping[str, Any]) -> list[str]:
    """Each super-resolution set, merged over its preset, checked against the schema's ``sr_preset`` and the rules
    across its keys (one source brightness; stamps need a magnitude; a point-mass lens behind its source)."""
    from jsonschema import Draft202012Validator

    with open(SCHEMA_PATH) as fh:
        schema = yaml.safe_load(fh)
    validator = Draft202012Validator({"$ref": "#/definitions/sr_preset", "definitions": schema["definitions"]})
    problems = []
    for name in sr_cfg["sets"]:
        where = f"simulate/sr/sets/{name}"
        try:
            merged = sr_set_config(sr_cfg, name)
        except ConfigError as err:
            problems.append(str(err))
            continue
        body = {k: v for k, v in merged.items() if k not in ("set", "preset", "lens_models", "noise_variants")}
        for err in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
            key = "/".join(str(p) for p in err.absolute_path)
            problems.append(f"config key '{where}{'/' + key if key else ''}': {err.message}")
        priors = merged.get("priors") or {}
        bright = [k for k in ("source_magnitude", "source_amplitude") if priors.get(k) is not None]
        if len(bright) != 1:
            problems.append(f"config keys '{where}/priors/source_magnitude' and '.../source_amplitude': exactly one "
                            f"must be set (not null), got {bright or 'neither'}")
        if merged.get("source") == "stamps" and priors.get("source_magnitude") is None:
            problems.append(f"config key '{where}/priors/source_magnitude': stamp sources are scaled to a magnitude "
                            "(source_amplitude is a Sérsic surface brightness)")
        try:
            from .priors import prior_bounds

            if prior_bounds((merged.get("noise") or {}).get("exposure_time_s", 1000.0))[0] <= 0:
                problems.append(f"config key '{where}/noise/exposure_time_s': exposure times must be positive")
        except ValueError as err:
            problems.append(f"config key '{where}/noise/exposure_time_s': {err}")
        theta = priors.get("theta_E")
        if isinstance(theta, Mapping) and "point_mass" in theta:
            pm = theta["point_mass"]
            if not pm.get("z_source", 0) > pm.get("z_lens", 0):
                problems.append(f"config key '{where}/priors/theta_E/point_mass': z_source must exceed z_lens")
    return problems


def _super_resolution_problems(cfg: dict) -> list[str]:
    """``super_resolution``'s sets, lens models and noise variants among those of ``simulate.sr`` (null: all of
    them, filled in ``cfg``), and the leaderboard's super-resolution models among those trained (null: the
    first, filled in); the PISR ablation's TV term non-zero."""
    sr, block = cfg["simulate"]["sr"], cfg["super_resolution"]
    problems = []
    for key, available in (("sets", list(sr["sets"])), ("lens_models", sr["lens_models"]),
                           ("noise_variants", sr["noise_variants"])):
        if block[key] is None:
            block[key] = list(available)
            continue
        missing = [v for v in block[key] if v not in available]
        if missing:
            problems.append(f"config keys 'super_resolution/{key}' and 'simulate/sr/{key}': {missing} "
                            f"{'is' if len(missing) == 1 else 'are'} not simulated (simulated: {list(available)})")
    board = cfg["leaderboard"]["super_resolution"]
    for key, listed in (("set", "sets"), ("lens_model", "lens_models"), ("noise", "noise_variants")):
        if board[key] is None:
            board[key] = block[listed][0] if block[listed] else None
        elif board[key] not in block[listed]:
            problems.append(f"config keys 'leaderboard/super_resolution/{key}' and 'super_resolution/{listed}': "
                            f"{board[key]!r} is not among the trained ({block[listed]})")
    if board["methods"] is None:
        from .names import SR_SOURCE_METHODS
        trained = block["methods"] if all(board[k] is not None for k in ("set", "lens_model", "noise")) else []
        board["methods"] = [m for m in SR_SOURCE_METHODS if m in trained]
    untrained = [m for m in board["methods"] if m not in block["methods"]]
    if untrained:
        problems.append(f"config keys 'leaderboard/super_resolution/methods' and 'super_resolution/methods': "
                        f"{untrained} {'is' if len(untrained) == 1 else 'are'} not trained ({block['methods']})")
    if block["pisr_ablation"] and not block["pisr"]["tv_weight"] > 0:
        problems.append("config keys 'super_resolution/pisr_ablation' and 'super_resolution/pisr/tv_weight': the "
                        "ablation adds the TV term of weight tv_weight, which must then be > 0")
    return problems


def sr_method_config(sr_cfg: Mapping[str, Any], name: str) -> tuple[str, dict]:
    """The training method and settings of ``name`` — a trained super-resolution method (supervised,
    lenssr_with_source, lenssr_no_source, pisr) or a PISR ablation variant (:data:`sourcelens.names.PISR_ABLATION`)
    — from the config's ``super_resolution`` block ``sr_cfg``: its ``<method>`` block, or a variant's overrides
    over ``pisr``."""
    from .names import PISR_ABLATION, SR_METHODS

    if name in PISR_ABLATION:
        return "pisr", deep_update(copy.deepcopy(dict(sr_cfg.get("pisr") or {})), PISR_ABLATION[name][1])
    if name not in SR_METHODS or name == "bicubic":
        raise ConfigError(f"unknown trained super-resolution method {name!r}; expected one of {SR_METHODS[1:]} or a "
                          f"PISR ablation variant {tuple(PISR_ABLATION)}")
    return name, copy.deepcopy(dict(sr_cfg.get(name) or {}))


def default_lensed_kinds(kinds: Sequence[str]) -> list[str]:
    """The source kinds the simulations lens when ``simulate.source_kinds`` is null: the drawn kinds configured
    (lensed as their noiseless truth), else the real galaxies; never the XDF picture (not linear in flux)."""
    drawn = [k for k in ("cosmos_fit", "parametric") if k in kinds]
    return drawn or [k for k in kinds if k == "cosmos"] or ["cosmos_fit", "parametric"]


def load_config(*paths: str | Path, overrides: Mapping[str, Any] | None = None) -> dict:
    """Load one or more YAML config files (later ones override earlier) and :func:`check_config` them."""
    merged: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
        deep_update(merged, data)
    if overrides:
        deep_update(merged, dict(overrides))
    return check_config(merged)


def deep_update(base: dict, update: Mapping[str, Any]) -> dict:
    """Recursively merge ``update`` into ``base`` (in place) and return it."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def derive_seed(config_seed: int, rule: str, *keys: Any) -> np.random.SeedSequence:
    """A SeedSequence derived from (config seed, rule name, shard keys).

    Stable across processes, Python versions and platforms (CRC32 of the names,
    not Python's salted ``hash``), so rerunning a rule gives identical draws.
    """
    entropy = [int(config_seed) & 0xFFFFFFFF, zlib.crc32(rule.encode())]
    for key in keys:
        entropy.append(zlib.crc32(str(key).encode()))
    return np.random.SeedSequence(entropy)


def rng_for(config_seed: int, rule: str, *keys: Any) -> np.random.Generator:
    """A numpy Generator seeded by :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(config_seed, rule, *keys))


def schema_markdown(schema_path: str | Path = SCHEMA_PATH) -> str:
    """A markdown table of every config key: path, type, default and description (for config/README.md)."""
    import json

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    defs = schema.get("definitions", {})
    rows = ["| key | type | default | description |", "|---|---|---|---|"]

    def fmt_type(node: Mapping[str, Any]) -> str:
        if "enum" in node:
            return " \\| ".join(f"`{v}`" for v in node["enum"])
        t = node.get("type", "prior" if "oneOf" in node else "")
        if t == "array" and "items" in node:
            inner = node["items"]
            return f"list of {fmt_type(inner)}"
        return "/".join(t) if isinstance(t, list) else str(t)

    def walk(node: Mapping[str, Any], path: str, parent_default: Any = None) -> None:
        # a whole-object default (e.g. a preset) gives the defaults of the keys below it
        for key, sub in node.get("properties", {}).items():
            where = f"{path}.{key}" if path else key
            ref = sub.get("$ref")
            resolved = {**defs[ref.split("/")[-1]], **{k: v for k, v in sub.items() if k != "$ref"}} if ref else sub
            desc = " ".join(str(resolved.get("description", "")).split()).replace("|", "\\|")
            inherited = isinstance(parent_default, Mapping) and key in parent_default
            value = parent_default[key] if inherited else resolved.get("default")
            if "properties" in resolved:
                rows.append(f"| `{where}` | object | | {desc} |")
                walk(resolved, where, value if isinstance(value, Mapping) else None)
            else:
                default = json.dumps(value, ensure_ascii=False)
                rows.append(f"| `{where}` | {fmt_type(resolved)} | `{default}` | {desc} |")

    walk(schema, "")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m sourcelens.config  -> the key table of config/README.md
    print(schema_markdown(), end="")
