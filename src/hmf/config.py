"""Config validation: the JSON schema in ``config/schema/`` (one file per section, joined by
``$ref``), with defaults filled in, and errors that name the offending key.

Snakemake's own ``validate`` does not fill defaults inside ``$ref``'d files, hence this small
validator (Draft 2020-12, the same default-filling approach). Values of keys marked
``writeOnly: true`` in the schema (names of secrets' variables, where a user may paste the
secret itself) are never echoed in errors.

Limits. Before anything walks the config, :func:`check_against` refuses one of more than
:data:`MAX_VALUES` values or nested more than :data:`MAX_DEPTH` levels deep: a YAML alias
(``*name``) is a copy of its anchor at every use, so a few hundred bytes of nested aliases
expand to billions of values. Numbers must be finite (NaN and infinity pass JSON-schema range
checks, so they are refused here for every key). Keywords of hmf's own in the schema:

- ``x-max-values: N``: a free-form object (``features.model_kwargs``, ``models.slide_params``)
  holds at most N values, counted through every level.
- ``x-not-a-credential: true``: the value is a name (of an environment variable), refused
  without being shown when it is shaped like an API key (:mod:`hmf.credentials`).
- ``x-url-without-credentials: true``: a URL without ``user:password@``.

The checks between keys (:func:`check_cross_keys`) follow the schema's; the model overrides
(``models.slide_params`` / ``models.patient_params``) are checked by
``hmf.models.registry.check_model_params``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

from hmf.credentials import looks_like_credential, url_has_credentials
from hmf.errors import ConfigError

# The most values (mappings, lists and scalars) and levels a config may hold: far above any
# real config (a few hundred values), far below what an alias bomb expands to.
MAX_VALUES = 100_000
MAX_DEPTH = 32


def path_component(name: str) -> str:
    """``name`` made safe as one folder name (e.g. ``timm:hf-hub/x`` -> ``timm_hf-hub_x``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def load_schema(path: str | Path) -> dict:
    """The schema at ``path`` with every relative ``$ref`` to a file replaced by that file."""
    path = Path(path)
    # libyaml's loader where PyYAML has it: the schema is read whenever the workflow is (and by
    # jobs that build settings), and the pure-Python loader takes a few hundred milliseconds.
    schema = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))

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


def _count_values(node: Any, limit: int) -> int:
    """Values in ``node`` (itself, and every mapping, list and scalar below it), counted up to
    just past ``limit`` and no further, so that the count is cheap whatever the size."""
    count, stack = 0, [node]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _max_values(validator, limit, instance, schema):
    if isinstance(instance, dict | list) and _count_values(instance, limit) > limit:
        yield ValidationError(
            f"holds more than {limit} values (the most allowed here; YAML aliases are expanded into copies)"
        )


def _not_a_credential(validator, enabled, instance, schema):
    if enabled and isinstance(instance, str) and looks_like_credential(instance):
        yield ValidationError(
            "looks like a secret key itself, not the name of an environment variable (value not shown): "
            "export the key in an environment variable and give the variable's name here"
        )


def _url_without_credentials(validator, enabled, instance, schema):
    if enabled and isinstance(instance, str) and url_has_credentials(instance):
        yield ValidationError(
            "holds credentials (user:password@ in the URL; value not shown): give the URL without them "
            "and put the API key in the environment variable named by text.llm.api_key_env"
        )


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(
        validator_class,
        {
            "properties": set_defaults,
            "x-max-values": _max_values,
            "x-not-a-credential": _not_a_credential,
            "x-url-without-credentials": _url_without_credentials,
        },
    )


_Validator = _with_defaults(Draft202012Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _message(error) -> str:
    """The error's message, without the offending value where the schema marks it secret."""
    if not error.schema.get("writeOnly") or str(error.validator).startswith("x-"):  # hmf's keywords never echo
        return error.message
    if error.validator == "pattern":
        return f"does not match {error.validator_value!r} (value not shown: it may be a secret)"
    return f"invalid value ({error.validator} {error.validator_value!r}; value not shown: it may be a secret)"


def _too_large(instance: Any, prefix: list) -> str | None:
    """Why ``instance`` is too large or too deep to validate (None when it is not), naming the
    key under which the limit was reached; at most :data:`MAX_VALUES` values are visited."""
    count, stack = 1, [(instance, prefix)]
    while stack:
        node, path = stack.pop()
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        if children and len(path) - len(prefix) >= MAX_DEPTH:
            return f"config key {_key(path[: len(prefix) + 2])}: nested more than {MAX_DEPTH} levels deep"
        count += len(node) if children else 0
        if count > MAX_VALUES:
            return (
                f"config key {_key(path[: max(2, len(prefix) + 1)])}: the config holds more than {MAX_VALUES} "
                f"values (YAML aliases (*name) are expanded into a copy at every use; write the values out)"
            )
        stack.extend((value, [*path, key]) for key, value in children)
    return None


def _non_finite(node: Any, path: list) -> list[str]:
    """Keys holding NaN or an infinity, which pass the schema's range checks."""
    if isinstance(node, float) and not math.isfinite(node):
        shown = "NaN" if math.isnan(node) else str(node)
        return [f"config key {_key(path)}: {shown} is not a valid value (numbers must be finite)"]
    if isinstance(node, dict):
        return [line for k, v in node.items() for line in _non_finite(v, [*path, k])]
    if isinstance(node, list):
        return [line for i, v in enumerate(node) for line in _non_finite(v, [*path, i])]
    return []


def check_against(schema: dict, instance: Any, prefix: list | None = None) -> Any:
    """Fill ``schema``'s defaults into ``instance`` (in place) and check it; raise ConfigError
    naming each offending key (``prefix``: the keys above ``instance`` in the whole config).

    A config too large or too deep (:data:`MAX_VALUES`, :data:`MAX_DEPTH`) is refused before
    it is walked, so a YAML alias bomb fails in milliseconds."""
    prefix = list(prefix or [])
    too_large = _too_large(instance, prefix)
    if too_large:
        raise ConfigError("invalid config:\n  " + too_large)
    errors = sorted(_Validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    lines = []
    for error in errors[:10]:
        path = [*prefix, *error.absolute_path]
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            for name in extra:
                allowed = ", ".join(sorted(error.schema.get("properties", {})))
                lines.append(f"config key {_key([*path, name])}: unknown key (allowed here: {allowed})")
        else:
            lines.append(f"config key {_key(path)}: {_message(error)}")
    lines += _non_finite(instance, prefix)[:10]
    if lines:
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    return instance


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Fill defaults into ``config`` (in place) and check it; raise ConfigError naming the key."""
    return check_against(load_schema(schema_path), config)


# The default model a level's others are compared with, when configured (evaluation.reference).
DEFAULT_REFERENCE = {"slide": "hmf", "patient": "hmf_patient"}
# Where the demo writes its label file, per demo.kind.
DEMO_LABEL_KEYS = {"camelyon17": "stage_labels", "tcga": "label_csv"}


def predicted_models(config: dict, level: str) -> list[str]:
    """The models of ``level`` (slide or patient) the predict target runs: predict.<level>_models,
    or every configured model of the level."""
    return list(config["predict"][f"{level}_models"] or config["models"][level])


def check_cross_keys(config: dict) -> None:
    """Check what the schema cannot say of a validated config (defaults filled): the keys that
    must agree with each other. Raise ConfigError naming the key; the checks that need the
    sample sheet are the workflow's."""
    from hmf.models.names import task_refusal
    from hmf.tasks import get_task

    dataset, models = config["dataset"], config["models"]
    try:
        task = get_task(dataset["task"], dataset.get("classes"))
    except ValueError as err:
        raise ConfigError(f"config: {err}") from None
    lines = [
        f"config key models.patient: {r}"
        for r in filter(None, (task_refusal("patient", m, task) for m in models["patient"]))
    ]
    # Every patient model reads the embeddings or the predictions of models.patient_source.
    if models["patient"] and models["patient_source"] not in models["slide"]:
        lines.append(
            f"config key models.patient_source: {models['patient_source']!r} is not one of "
            f"models.slide {models['slide']}"
        )
    for level in ("slide", "patient"):
        chosen = config["evaluation"]["reference"][level]
        if chosen is not None and chosen not in models[level]:
            lines.append(
                f"config key evaluation.reference.{level}: {chosen!r} is not one of models.{level} {models[level]}"
            )
    predict = config["predict"]
    predicted = {level: predicted_models(config, level) for level in ("slide", "patient")}
    for level in ("slide", "patient"):
        unknown = sorted(set(predicted[level]) - set(models[level]))
        if unknown:
            lines.append(
                f"config key predict.{level}_models: {unknown} not among the configured models.{level} {models[level]}"
            )
    chosen = predict["submission_model"]
    if chosen is not None and chosen not in predicted["patient"]:
        lines.append(
            f"config key predict.submission_model: {chosen!r} is not among the predicted patient models "
            f"{predicted['patient']}"
        )
    demo = config["demo"]
    if demo.get("enabled", False):
        kind, label_key = demo["kind"], DEMO_LABEL_KEYS[demo["kind"]]
        if dataset.get("format") != kind or not dataset.get(label_key) or not dataset.get("slide_dir"):
            lines.append(
                f"config key demo.kind: {kind} needs dataset.format: {kind}, dataset.{label_key} "
                f"and dataset.slide_dir (where the demo writes its label file and slides)"
            )
    if lines:
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
