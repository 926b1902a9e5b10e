"""Configuration: loading and validating against the workflow schema, and derived seeds.

The workflow validates its config with ``snakemake.utils.validate``; the same schema is
used here so that notebooks and the CLI see exactly the same defaults and errors.
"""

from __future__ import annotations

import copy
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


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


def load_config(*paths: str | Path, overrides: Mapping[str, Any] | None = None) -> dict:
    """Load one or more YAML config files (later ones override earlier), validate, fill defaults."""
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
    return validate_config(merged)


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

    def walk(node: Mapping[str, Any], path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            where = f"{path}.{key}" if path else key
            ref = sub.get("$ref")
            resolved = {**defs[ref.split("/")[-1]], **{k: v for k, v in sub.items() if k != "$ref"}} if ref else sub
            desc = " ".join(str(resolved.get("description", "")).split()).replace("|", "\\|")
            if "properties" in resolved:
                rows.append(f"| `{where}` | object | | {desc} |")
                walk(resolved, where)
            else:
                default = json.dumps(resolved.get("default"), ensure_ascii=False)
                rows.append(f"| `{where}` | {fmt_type(resolved)} | `{default}` | {desc} |")

    walk(schema, "")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m sourcelens.config  -> the key table of config/README.md
    print(schema_markdown(), end="")
