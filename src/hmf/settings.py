"""The config's sections as typed, frozen settings objects.

The JSON schema in ``config/schema/`` is the only source of defaults and ranges. A section is
checked and filled by the schema (:func:`section`), then turned into a frozen dataclass
(:func:`build`) whose fields have no defaults of their own: a key the schema does not fill is
a missing field, a key the class does not know is an error, so the two cannot drift apart
silently. The workflow validates the whole config once at parse time; a script or a test that
receives one section (``params:``) or a partial one calls :func:`section` to get the same
filled values.

    from hmf.settings import build, section
    features = build(FeatureSettings, section("features", snakemake.params.features))
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from hmf.config import ConfigError, check_against, load_schema

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema" / "config.schema.yaml"

T = TypeVar("T")


@functools.cache
def schema() -> dict:
    """The whole config schema, its ``$ref``'d section files inlined."""
    if not SCHEMA_PATH.is_file():
        raise FileNotFoundError(f"config schema not found at {SCHEMA_PATH}: hmf reads it from its checkout")
    return load_schema(SCHEMA_PATH)


def section(name: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config section ``name`` from ``given`` (None: empty) with the schema's defaults filled
    in and checked; a copy, so ``given`` is never changed. Raises ConfigError naming the key."""
    properties = schema()["properties"]
    if name not in properties:
        raise KeyError(f"no config section {name!r} (sections: {', '.join(properties)})")
    filled = copy.deepcopy(dict(given or {}))
    check_against(properties[name], filled, prefix=[name])
    return filled


def _convert(kind: Any, value: Any, where: str) -> Any:
    """``value`` as the field type ``kind``: dataclasses built, lists as tuples, mappings read-only."""
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            if dataclasses.is_dataclass(option) and isinstance(value, Mapping):
                return build(option, value, where)
        return _convert(next(a for a in typing.get_args(kind) if a is not type(None)), value, where)
    if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
        return build(kind, value, where)
    if origin is tuple and isinstance(value, list | tuple):
        args = typing.get_args(kind)
        inner = args[0] if args else Any
        return tuple(_convert(inner, v, where) for v in value)
    if origin in (Mapping, dict) or kind in (Mapping, dict):
        args = typing.get_args(kind)
        inner = args[1] if len(args) == 2 else Any
        return types.MappingProxyType({k: _convert(inner, v, f"{where}.{k}") for k, v in value.items()})
    return value


def build(cls: type[T], values: Mapping[str, Any], where: str | None = None) -> T:
    """A ``cls`` (frozen dataclass) from a schema-filled mapping. Every field must be present
    (the schema fills it) and every key must be a field; ``where`` names the section in errors."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    missing = sorted(set(names) - set(values))
    if unknown or missing:
        raise ConfigError(
            f"config section {where}: "
            + "; ".join(
                part
                for part in (
                    f"unknown key(s) {unknown}" if unknown else "",
                    f"missing key(s) {missing} (fill the section from the schema first: hmf.settings.section)"
                    if missing
                    else "",
                )
                if part
            )
        )
    return cls(**{n: _convert(hints[n], values[n], f"{where}.{n}") for n in names})


def as_dict(settings: Any) -> dict[str, Any]:
    """Plain data again (dicts and lists), e.g. to record the settings next to an output."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(settings)
