"""Defaults of the ``text:`` config section, merged under what the user gives.

``config/schema/text.schema.yaml`` repeats these defaults for validation; a test keeps the two
in step.
"""

from __future__ import annotations

import copy
from typing import Any

ENCODER_KINDS = ("t5", "sentence_transformers")

DEFAULT_TEMPLATE = (
    "You are an expert histopathologist writing reference descriptions for a model that matches "
    "text to haematoxylin and eosin (H&E) whole-slide images.\n"
    "The classes of the task are: {classes}.\n"
    'Write {n} distinct, medically accurate descriptions of the class "{class_name}". Each is one '
    "sentence of 15 to 40 words describing what a pathologist sees in tissue of this class "
    "(architecture, cells, nuclei, stroma, size criteria, immunohistochemistry where it defines "
    "the class), specific enough to tell it apart from the other classes. Do not mention the "
    "other classes by name.\n"
    'Reply with a JSON object only, of the form {"descriptions": ["...", "..."]}.'
)

DEFAULTS: dict[str, Any] = {
    "source": "bank",
    "bank_dir": None,
    "encoder": "minilm",
    "encoders": {
        "flan_t5_small": {"kind": "t5", "path_or_id": "google/flan-t5-small"},
        "minilm": {"kind": "sentence_transformers", "path_or_id": None},
    },
    "allow_download": False,
    "device": "auto",
    "batch_size": 32,
    "max_length": 128,
    "llm": {
        "base_url": None,
        "model": "gpt-4o-mini",
        "temperature": 0.7,
        "seed": 0,
        "n_per_class": 6,
        "template": None,  # None: DEFAULT_TEMPLATE
        "api_key_env": "OPENAI_API_KEY",
        "timeout_s": 60.0,
        "max_retries": 5,
        "backoff_s": 2.0,
    },
}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def text_settings(cfg: dict | None) -> dict[str, Any]:
    """The ``text`` config section with defaults filled in (user encoders are added to the built-ins)."""
    merged = _merge(DEFAULTS, cfg or {})
    if merged["llm"].get("template") in (None, ""):
        merged["llm"]["template"] = DEFAULT_TEMPLATE
    if merged["source"] == "llm" and not merged["llm"].get("model"):
        raise ValueError("text.llm.model must name the model to ask (e.g. gpt-4o-mini)")
    if merged["source"] not in ("bank", "llm"):
        raise ValueError(f"text.source must be 'bank' or 'llm', got {merged['source']!r}")
    return merged


def encoder_spec(name: str, text_cfg: dict[str, Any]) -> dict[str, Any]:
    """``{kind, path_or_id}`` of encoder ``name`` from the (defaults-filled) text config."""
    specs = text_cfg["encoders"]
    if name not in specs:
        raise ValueError(f"unknown text encoder {name!r}; configured: {sorted(specs)} (text.encoders)")
    spec = specs[name] or {}
    if spec.get("kind") not in ENCODER_KINDS:
        raise ValueError(f"text.encoders.{name}.kind must be one of {ENCODER_KINDS}, got {spec.get('kind')!r}")
    return {"kind": spec["kind"], "path_or_id": spec.get("path_or_id")}
