"""Config validation: the JSON schema in ``config/schema/`` (one file per section, joined by
``$ref``), with defaults filled in, and errors that name the offending key.

Snakemake's own ``validate`` does not fill defaults inside ``$ref``'d files, hence this small
validator (Draft 2020-12, the same default-filling approach).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators


def path_component(name: str) -> str:
    """``name`` made safe as one folder name (e.g. ``timm:hf-hub/x`` -> ``timm_hf-hub_x``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class ConfigError(ValueError):
    """A config that does not match the schema; the message names the key."""


def load_schema(path: str | Path) -> dict:
    """The schema at ``path`` with every relative ``$ref`` to a file replaced by that file."""
    path = Path(path)
    schema = yaml.safe_load(path.read_text())

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str) and not node["$ref"].startswith("#"):
                target = load_schema(path.parent / node["$ref"])
                target.pop("$schema", None)
                merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
                return inline(merged)
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(Draft202012Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Fill defaults into ``config`` (in place) and check it; raise ConfigError naming the key."""
    schema = load_schema(schema_path)
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for error in errors[:10]:
            if error.validator == "additionalProperties":
                extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
                for name in extra:
                    allowed = ", ".join(sorted(error.schema.get("properties", {})))
                    lines.append(f"config key {_key([*error.absolute_path, name])}: unknown key (allowed here: {allowed})")
            else:
                lines.append(f"config key {_key(error.absolute_path)}: {error.message}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    return config
