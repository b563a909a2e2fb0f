"""Config validation: the JSON schema in ``config/schema/`` (one file per section, joined by
``$ref``), with defaults filled in, and errors that name the offending key.

Snakemake's own ``validate`` does not fill defaults inside ``$ref``'d files, hence this small
validator (Draft 2020-12, the same default-filling approach). Values of keys marked
``writeOnly: true`` in the schema (names of secrets' variables, where a user may paste the
secret itself) are never echoed in errors.

:func:`check_model_params` checks ``models.slide_params`` / ``models.patient_params`` against
the keys each model accepts, read from the model names and recipes and the models'
constructors without importing torch (so ``snakemake -n`` stays fast).
"""

from __future__ import annotations

import ast
import copy
import functools
import math
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


def _message(error) -> str:
    """The error's message, without the offending value where the schema marks it secret."""
    if not error.schema.get("writeOnly"):
        return error.message
    if error.validator == "pattern":
        return f"does not match {error.validator_value!r} (value not shown: it may be a secret)"
    return f"invalid value ({error.validator} {error.validator_value!r}; value not shown: it may be a secret)"


def _not_a_number(node: Any, path: list) -> list[str]:
    """Keys holding NaN, which passes every range check of the schema."""
    if isinstance(node, float) and math.isnan(node):
        return [f"config key {_key(path)}: NaN is not a valid value"]
    if isinstance(node, dict):
        return [line for k, v in node.items() for line in _not_a_number(v, [*path, k])]
    if isinstance(node, list):
        return [line for i, v in enumerate(node) for line in _not_a_number(v, [*path, i])]
    return []


def check_against(schema: dict, instance: Any, prefix: list | None = None) -> Any:
    """Fill ``schema``'s defaults into ``instance`` (in place) and check it; raise ConfigError
    naming each offending key (``prefix``: the keys above ``instance`` in the whole config)."""
    prefix = list(prefix or [])
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
    lines += _not_a_number(instance, prefix)[:10]
    if lines:
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    return instance


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Fill defaults into ``config`` (in place) and check it; raise ConfigError naming the key."""
    return check_against(load_schema(schema_path), config)


# --- model hyperparameters -------------------------------------------------------------

_MODELS_DIR = Path(__file__).resolve().parent / "models"
# Sections of a recipe whose keys are checked one level down (hmf.training.hparams.MERGED_KEYS).
_SECTION_KEYS = {"optimizer": "OPTIMIZER_KEYS", "scheduler": "SCHEDULER_KEYS"}


def _module_tree(name: str) -> ast.Module:
    return ast.parse((_MODELS_DIR / f"{name}.py").read_text(encoding="utf-8"))


def _assigned(tree: ast.Module, name: str) -> ast.expr:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
            return node.value
    raise LookupError(f"no assignment to {name} in hmf/models")


def _init_params(module: str, class_name: str) -> frozenset[str] | None:
    """Keyword parameters of ``class_name.__init__`` in ``hmf/models/<module>.py`` (None: any, **kwargs)."""
    for node in _module_tree(module).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args
                    if args.kwarg is not None:
                        return None
                    return frozenset(a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs))
    raise LookupError(f"no {class_name}.__init__ in hmf/models/{module}.py")


@functools.lru_cache(maxsize=1)
def accepted_model_params() -> dict[str, dict[str, dict[str, frozenset[str] | None]]]:
    """``{level: {model: {"recipe": keys, "model": keys | None, "optimizer": keys, "scheduler": keys}}}``
    for every trained model.

    The names and classes come from ``hmf.models.names``, the recipe keys from the recipes of
    ``hmf.models.registry`` (neither imports torch); the ``model`` keys are the parameters of
    the model's constructor (None when it takes ``**kwargs``) and the optimiser and scheduler
    keys are those of ``hmf/models/optim.py``, both read as source, so that no torch import is
    needed at parse time.
    """
    from hmf.models.names import LEVELS, model_info, model_names
    from hmf.models.registry import DATA_ARGS, training_defaults

    optim = _module_tree("optim")
    sections = {key: frozenset(ast.literal_eval(_assigned(optim, const))) for key, const in _SECTION_KEYS.items()}
    accepted: dict[str, dict[str, dict[str, frozenset[str] | None]]] = {}
    for level in LEVELS:
        accepted[level] = {}
        for name in model_names(level, trained=True):
            params = _init_params(*model_info(level, name).implementation.rsplit(".", 1))
            accepted[level][name] = {
                "recipe": frozenset(training_defaults(name, level)),
                "model": None if params is None else params - {"self"} - DATA_ARGS,
                **sections,
            }
    return accepted


def check_model_params(config: dict) -> None:
    """Check ``models.slide_params`` and ``models.patient_params`` (model names and every key,
    one level into ``model``, ``optimizer`` and ``scheduler``); raise ConfigError naming the key."""
    models = config.get("models") or {}
    accepted = None
    lines = []
    for level in ("slide", "patient"):
        section = f"models.{level}_params"
        for name, overrides in (models.get(f"{level}_params") or {}).items():
            accepted = accepted or accepted_model_params()
            if name not in accepted[level]:
                lines.append(
                    f"config key {section}.{name}: no {level} model of that name "
                    f"(models: {', '.join(sorted(accepted[level]))})"
                )
                continue
            keys = accepted[level][name]
            for key, value in (overrides or {}).items():
                if key not in keys["recipe"]:
                    lines.append(
                        f"config key {section}.{name}.{key}: unknown key "
                        f"(allowed here: {', '.join(sorted(keys['recipe']))})"
                    )
                elif key in ("model", *_SECTION_KEYS):
                    if not isinstance(value, dict):
                        lines.append(f"config key {section}.{name}.{key}: must be a mapping of keys to values")
                        continue
                    allowed = keys[key]
                    for sub in sorted(set(value) - (allowed if allowed is not None else set(value))):
                        lines.append(
                            f"config key {section}.{name}.{key}.{sub}: unknown key "
                            f"(allowed here: {', '.join(sorted(allowed))})"
                        )
    if lines:
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
