"""The config's sections as typed, frozen settings objects.

The JSON schema in ``config/schema/`` is the only source of defaults and ranges. A section is
checked and filled by the schema (:func:`section`), then turned into a frozen dataclass
(:func:`build`) whose fields have no defaults of their own: a key the schema does not fill is
a missing field, a key the class does not know is an error, so the two cannot drift apart
silently. The workflow validates the whole config once at parse time; a script or a test that
receives one section or a partial one calls :func:`section` to get the same filled values.

The schema also says of every key whether it changes outputs (``x-reruns``): a rule's params
hold those keys only (:func:`result_params`), and its job adds the run-time keys from the
config (:func:`job_section`), so that a change of device, threads or cache size never reruns a
finished job.

    params: training=result_params("training", config["training"])        # a rule
    training = build(TrainingSettings, job_section(snakemake, "training"))  # its job
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


# -- the two kinds of keys -------------------------------------------------------------------
#
# Each key of the schema says whether a change of its value changes what the jobs write
# (``x-reruns: true``: precision, model settings, seeds, folds ...) or only how and where they
# run (``x-reruns: false``: devices, threads, batch sizes, caches, time-outs, log
# intervals, download permissions). A rule's params hold the first kind only, because
# Snakemake reruns a job whose params changed; a job reads the second kind from the config
# (:func:`job_section`). A key without the annotation counts as ``true``, so a forgotten one
# can cost a rerun but never a stale output; tests require it on every key. On an object with
# ``properties`` and no annotation of its own the annotation is per key below it.

RERUNS = "x-reruns"


def _section_schema(name: str) -> dict:
    properties = schema()["properties"]
    if name not in properties:
        raise KeyError(f"no config section {name!r} (sections: {', '.join(properties)})")
    return properties[name]


def _split(node: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keys that change outputs, run-time keys) of ``values`` under the schema ``node``."""
    properties = node.get("properties", {})
    results: dict[str, Any] = {}
    runtime: dict[str, Any] = {}
    for key, value in values.items():
        sub = properties.get(key, {})
        if RERUNS not in sub and "properties" in sub and isinstance(value, Mapping):
            inner_results, inner_runtime = _split(sub, value)
            results[key] = inner_results
            if inner_runtime:
                runtime[key] = inner_runtime
        elif sub.get(RERUNS, True):
            results[key] = copy.deepcopy(value)
        else:
            runtime[key] = copy.deepcopy(value)
    return results, runtime


def result_params(name: str, values: Mapping[str, Any], only: typing.Iterable[str] | None = None) -> dict[str, Any]:
    """The keys of section ``name`` in ``values`` whose change changes a job's outputs (schema
    ``x-reruns``, see above), as plain data for a rule's params; ``only``: the top-level keys
    the rule's jobs read (others are left out, so that they do not rerun it).

        params: training=result_params("training", config["training"])
    """
    results = _split(_section_schema(name), values)[0]
    if only is None:
        return results
    only = list(only)
    unknown = sorted(set(only) - set(_section_schema(name).get("properties", {})))
    if unknown:
        raise KeyError(f"config section {name} has no key(s) {unknown}")
    return {key: results[key] for key in only if key in results}


def runtime_values(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The run-time keys (``x-reruns: false``) of section ``name`` in ``values``."""
    return _split(_section_schema(name), values)[1]


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def job_section(snakemake: Any, name: str) -> dict[str, Any]:
    """Section ``name`` as a workflow job sees it: the keys that change its outputs from its
    rule's params (``params.<name>``, as :func:`result_params` gave them; absent ones at the
    schema's defaults), the run-time keys from the workflow's config (``snakemake.config``),
    filled and checked by the schema."""
    given = getattr(snakemake.params, name, None) or {}
    runtime = runtime_values(name, (getattr(snakemake, "config", None) or {}).get(name) or {})
    return section(name, _merged(runtime, _split(_section_schema(name), given)[0]))


def key_kinds() -> dict[str, bool | None]:
    """Every key of the schema (dotted, e.g. ``features.device``) and its ``x-reruns``
    annotation (None: not annotated). An object with ``properties`` and no annotation of its
    own is not listed itself, its keys are."""
    kinds: dict[str, bool | None] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, sub in node.get("properties", {}).items():
            dotted = f"{prefix}{key}"
            if RERUNS not in sub and "properties" in sub:
                walk(sub, f"{dotted}.")
            else:
                kinds[dotted] = sub.get(RERUNS)

    for name, sub in schema()["properties"].items():
        walk(sub, f"{name}.")
    return kinds
