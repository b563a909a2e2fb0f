"""Model registry: each trained model of ``hmf.models.names``, built from the class named there
with its default training recipe (its paper's / official code's).

``DEFAULTS[name]`` keys: ``model`` (constructor keyword arguments: sizes, dropout, variants),
``optimizer`` and ``scheduler`` (specs for ``hmf.models.optim``), ``epochs`` (maximum),
``patience`` (early stopping, epochs without improvement of the validation metric),
``grad_clip`` (max gradient norm or None), ``accumulation`` (bags per optimiser step),
``mixed_precision`` ("bf16" on CUDA or None). A config can override any key.
``DEFAULTS["slide"][name]`` and ``DEFAULTS["patient"][name]``; ``training_defaults`` copies one.
The model classes are imported when a model is built, so the recipes are read without torch.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hmf.errors import ConfigError
from hmf.models.names import model_info, model_names

if TYPE_CHECKING:
    from torch import nn


def _recipe(
    model: dict,
    optimizer: dict,
    scheduler: dict | None = None,
    *,
    epochs: int,
    patience: int,
    grad_clip: float | None = None,
    accumulation: int = 1,
    mixed_precision: str | None = None,
) -> dict:
    return {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler or {"name": "none"},
        "epochs": epochs,
        "patience": patience,
        "grad_clip": grad_clip,
        "accumulation": accumulation,
        "mixed_precision": mixed_precision,
    }


_ADAM_1E4 = {"name": "adam", "lr": 1e-4, "weight_decay": 1e-5}
# HMF trains both levels alike: AdamW 1e-5, wd 1e-5, up to 200 epochs, patience 10, 5 bags a
# step, with label-smoothed focal losses.
_HMF_RECIPE = dict(
    optimizer={"name": "adamw", "lr": 1e-5, "weight_decay": 1e-5}, epochs=200, patience=10, accumulation=5
)
_HMF_LOSS = {"label_smoothing": 0.1, "focal_gamma": 2.0}
_DTFD_MODEL = {"n_pseudo_bags": 4, "hidden": 512, "attn_hidden": 128, "dropout": 0.0}
_DTFD_RECIPE = dict(
    optimizer={"name": "adam", "lr": 1e-4, "weight_decay": 1e-4},
    scheduler={"name": "multistep", "milestones": [100], "gamma": 0.2},
    epochs=200,
    patience=20,
    grad_clip=5.0,
)

SLIDE_DEFAULTS: dict[str, dict] = {
    "hmf": _recipe(
        {
            **{"dim": 512, "embed_dim": 1024, "filter_ratio": 0.5, "max_kept": 16384},  # sizes, patch filter
            **{"bca_heads": 8, "bca_dropout": 0.25},  # bi-directional cross-attention
            **{"encoder_layers": 2, "encoder_heads": 4, "encoder_ff": 1024, "temperature": 0.07},
            **_HMF_LOSS,
            "filter_loss_weight": 1.0,
        },
        **copy.deepcopy(_HMF_RECIPE),
        mixed_precision="bf16",
    ),
    "meanpool": _recipe({"pool": "mean", "hidden": 512, "dropout": 0.25}, dict(_ADAM_1E4), epochs=200, patience=20),
    "maxpool": _recipe({"pool": "max", "hidden": 512, "dropout": 0.25}, dict(_ADAM_1E4), epochs=200, patience=20),
    # ABMIL with CLAM's sizes and recipe (Adam 1e-4, wd 1e-5, up to 200 epochs, patience 20).
    "abmil": _recipe({"hidden": 512, "attn_hidden": 256, "dropout": 0.25}, dict(_ADAM_1E4), epochs=200, patience=20),
    "gatmil": _recipe(
        {"hidden": 256, "heads": 4, "attn_hidden": 128, "dropout": 0.25, "graph": "grid", "k": 8},
        dict(_ADAM_1E4),
        epochs=200,
        patience=20,
    ),
    # DSMIL: Adam betas (0.5, 0.9), wd 1e-3, cosine to 5e-6.
    "dsmil": _recipe(
        {"q_dim": 128, "passing_v": False, "dropout_v": 0.0},
        {"name": "adam", "lr": 1e-4, "weight_decay": 1e-3, "betas": [0.5, 0.9]},
        {"name": "cosine", "eta_min": 5e-6},
        epochs=200,
        patience=20,
    ),
    # TransMIL: RAdam + Lookahead, lr 2e-4, wd 1e-5, max 200 epochs, patience 10.
    "transmil": _recipe(
        {"hidden": 512, "heads": 8, "dropout": 0.1, "attention": "nystrom", "checkpoint_tokens": 16384},
        {"name": "radam", "lr": 2e-4, "weight_decay": 1e-5, "lookahead": {"k": 5, "alpha": 0.5}},
        epochs=200,
        patience=10,
    ),
    "dtfd_maxs": _recipe({"distill": "maxs", **_DTFD_MODEL}, **copy.deepcopy(_DTFD_RECIPE)),
    "dtfd_maxmins": _recipe({"distill": "maxmins", **_DTFD_MODEL}, **copy.deepcopy(_DTFD_RECIPE)),
    "dtfd_afs": _recipe({"distill": "afs", **_DTFD_MODEL}, **copy.deepcopy(_DTFD_RECIPE)),
    # ACMIL: 5 branches, top-10 masking with drop 0.6, AdamW 1e-4 wd 1e-5, 50 epochs cosine.
    "acmil": _recipe(
        {"hidden": 512, "attn_hidden": 128, "n_branches": 5, "n_masked_patch": 10, "mask_drop": 0.6, "dropout": 0.0},
        {"name": "adamw", "lr": 1e-4, "weight_decay": 1e-5},
        {"name": "cosine", "eta_min": 0.0},
        epochs=50,
        patience=50,
    ),
}

PATIENT_DEFAULTS: dict[str, dict] = {
    "hmf_patient": _recipe(
        {
            **{"heads": 8, "layers": 2, "ff_dim": 1024, "dropout": 0.1},  # transformer over the slides
            **{"attn_hidden": [512, 256], "mlp_hidden": 256, "max_nodes": 16},
            **_HMF_LOSS,
        },
        **copy.deepcopy(_HMF_RECIPE),
    ),
    **{
        f"{pool}pool": _recipe(
            {"pool": pool, "dropout": 0.0, **({"attn_hidden": 256} if pool == "attn" else {})},
            dict(_ADAM_1E4),
            epochs=100,
            patience=20,
        )
        for pool in ("mean", "max", "sum", "min", "attn")
    },
}

# Slide and patient model names overlap (meanpool, maxpool), hence one table per level.
DEFAULTS: dict[str, dict[str, dict]] = {"slide": SLIDE_DEFAULTS, "patient": PATIENT_DEFAULTS}
SLIDE_MODELS = model_names("slide", trained=True)
PATIENT_MODELS = model_names("patient", trained=True)  # the pN rule and mean_prob are not built
for _level, _table in DEFAULTS.items():
    if tuple(_table) != model_names(_level, trained=True):
        raise RuntimeError(
            f"hmf.models.registry: {_level} recipes {list(_table)} differ from the trained {_level} models "
            f"of hmf.models.names {list(model_names(_level, trained=True))}"
        )

# Keys fixed by the model name (the variant), not overridable from a config.
_FIXED = {
    "meanpool": {"pool"},
    "maxpool": {"pool"},
    "dtfd_maxs": {"distill"},
    "dtfd_maxmins": {"distill"},
    "dtfd_afs": {"distill"},
    **{f"{p}pool": {"pool"} for p in ("mean", "max", "sum", "min", "attn")},
}
# Constructor arguments the builders set from the data, never from a config.
DATA_ARGS = frozenset({"in_dim", "emb_dim", "n_classes", "text_dim"})


def training_defaults(name: str, level: str = "slide") -> dict:
    """A deep copy of a model's default recipe (``level`` 'slide' or 'patient')."""
    table = DEFAULTS.get(level)
    if table is None:
        raise ValueError(f"unknown level {level!r}: expected 'slide' or 'patient'")
    if name not in table:
        raise ValueError(f"unknown {level} model {name!r}: choose one of {sorted(table)}")
    return copy.deepcopy(table[name])


def model_class(level: str, name: str) -> type[nn.Module]:
    """The class of the trained model ``name`` of ``level`` (imports its module, and torch)."""
    if name not in DEFAULTS.get(level, {}):
        training_defaults(name, level)  # raises, naming the choices
    module, cls = model_info(level, name).implementation.rsplit(".", 1)
    return getattr(importlib.import_module(f"hmf.models.{module}"), cls)


def _model_kwargs(level: str, name: str, defaults: dict, params: dict | None) -> dict:
    kwargs = copy.deepcopy(defaults)
    params = dict(params or {})
    check_model_overrides(level, name, {"model": params})
    fixed = _FIXED.get(name, set()) & set(params)
    for key in fixed:
        if params[key] != kwargs[key]:
            raise ValueError(f"{name}: model parameter {key!r} is fixed to {kwargs[key]!r} by the model name")
    kwargs.update(params)
    if "attn_hidden" in kwargs and isinstance(kwargs["attn_hidden"], list):
        kwargs["attn_hidden"] = tuple(kwargs["attn_hidden"])
    return kwargs


def build_slide_model(
    name: str, in_dim: int, n_classes: int, params: dict | None = None, text_dim: int | None = None
) -> nn.Module:
    """A slide model by name; ``params`` overrides keys of ``DEFAULTS[name]['model']``."""
    cls = model_class("slide", name)
    kwargs = _model_kwargs("slide", name, SLIDE_DEFAULTS[name]["model"], params)
    if model_info("slide", name).needs_text:
        if text_dim is None:
            raise ValueError(f"{name}: text_dim is required (width of the text embedding bank)")
        return cls(in_dim, n_classes, text_dim=text_dim, **kwargs)
    return cls(in_dim, n_classes, **kwargs)


def build_patient_model(name: str, emb_dim: int, n_classes: int, params: dict | None = None) -> nn.Module:
    """A trainable patient model by name (the untrained ones are ``patient_aggregators.aggregate_slides``)."""
    cls = model_class("patient", name)
    kwargs = _model_kwargs("patient", name, PATIENT_DEFAULTS[name]["model"], params)
    return cls(emb_dim, n_classes, **kwargs)


# -- the keys a config may override ----------------------------------------------------------
#
# The one check of ``models.slide_params`` / ``models.patient_params``: the Snakefile runs it
# on the whole config at parse time (:func:`check_model_params`), ``hmf.training.hparams`` on a
# model's overrides and the builders on a model's constructor parameters. The accepted keys are
# read from the sources, so that it runs without importing torch.

_MODELS_DIR = Path(__file__).resolve().parent
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

    The names and classes come from ``hmf.models.names``, the recipe keys from the recipes
    above; the ``model`` keys are the parameters of the model's constructor (None when it takes
    ``**kwargs``) and the optimiser and scheduler keys are those of ``hmf/models/optim.py``,
    both read as source, so that no torch import is needed at parse time.
    """
    optim = _module_tree("optim")
    sections = {key: frozenset(ast.literal_eval(_assigned(optim, const))) for key, const in _SECTION_KEYS.items()}
    accepted: dict[str, dict[str, dict[str, frozenset[str] | None]]] = {}
    for level in DEFAULTS:
        accepted[level] = {}
        for name in model_names(level, trained=True):
            params = _init_params(*model_info(level, name).implementation.rsplit(".", 1))
            accepted[level][name] = {
                "recipe": frozenset(training_defaults(name, level)),
                "model": None if params is None else params - {"self"} - DATA_ARGS,
                **sections,
            }
    return accepted


def override_errors(level: str, name: str, overrides: Mapping[str, Any] | None) -> list[str]:
    """What is wrong with ``overrides`` of the ``level`` model ``name`` (its entry of
    ``models.<level>_params``): one line per key, naming it; empty when nothing is."""
    accepted = accepted_model_params()
    where = f"models.{level}_params.{name}"
    if name not in accepted.get(level, {}):
        return [f"config key {where}: no {level} model of that name (models: {', '.join(sorted(accepted[level]))})"]
    keys = accepted[level][name]
    lines = []
    for key, value in (overrides or {}).items():
        if key not in keys["recipe"]:
            lines.append(f"config key {where}.{key}: unknown key (allowed here: {', '.join(sorted(keys['recipe']))})")
        elif key in ("model", *_SECTION_KEYS):
            if not isinstance(value, Mapping):
                lines.append(f"config key {where}.{key}: must be a mapping of keys to values")
                continue
            allowed = keys[key]
            for sub in sorted(set(value) - (allowed if allowed is not None else set(value))):
                lines.append(
                    f"config key {where}.{key}.{sub}: unknown key (allowed here: {', '.join(sorted(allowed))})"
                )
    return lines


def check_model_overrides(level: str, name: str, overrides: Mapping[str, Any] | None) -> None:
    """:func:`override_errors` as a ConfigError (a ValueError) naming every bad key."""
    lines = override_errors(level, name, overrides)
    if lines:
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))


def check_model_params(config: Mapping[str, Any]) -> None:
    """Check ``models.slide_params`` and ``models.patient_params`` of a config (model names and
    every key, one level into ``model``, ``optimizer`` and ``scheduler``); raise ConfigError
    naming the key."""
    models = config.get("models") or {}
    lines = [
        line
        for level in DEFAULTS
        for name, overrides in (models.get(f"{level}_params") or {}).items()
        for line in override_errors(level, name, overrides)
    ]
    if lines:
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
