"""The ``text:`` config section as typed, frozen settings (:class:`TextSettings`).

Defaults and ranges come from ``config/schema/text.schema.yaml`` only (through
:mod:`hmf.settings`); this module adds what the schema cannot say: user encoders are added to
the built-in ones, ``llm.template: null`` is the built-in :data:`DEFAULT_TEMPLATE`, the chosen
encoder must be configured and a template needs its placeholders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hmf.config import ConfigError
from hmf.settings import as_dict, build, schema, section

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


@dataclasses.dataclass(frozen=True)
class TextEncoderSpec:
    """One entry of ``text.encoders``."""

    kind: str
    path_or_id: str | None


@dataclasses.dataclass(frozen=True)
class LLMSettings:
    """``text.llm``: the endpoint asked for descriptions when ``text.source`` is llm."""

    base_url: str | None
    model: str
    temperature: float
    seed: int | None
    n_per_class: int
    template: str
    api_key_env: str
    timeout_s: float
    max_retries: int
    backoff_s: float

    @classmethod
    def from_config(cls, llm_cfg: Mapping[str, Any] | None) -> LLMSettings:
        """The settings of a ``text.llm`` mapping alone (the rest of the section at its defaults)."""
        return text_settings({"llm": dict(llm_cfg or {})}).llm

    @property
    def per_class(self) -> bool:
        return "{class_name}" in self.template


@dataclasses.dataclass(frozen=True)
class TextSettings:
    """The ``text`` section: where descriptions come from and how they are embedded."""

    source: str
    bank_dir: str | None
    encoder: str
    encoders: Mapping[str, TextEncoderSpec]
    allow_download: bool
    device: str
    batch_size: int
    max_length: int
    llm: LLMSettings

    def encoder_spec(self, name: str) -> TextEncoderSpec:
        """The configured encoder ``name``; ValueError naming the configured ones if unknown."""
        if name not in self.encoders:
            raise ValueError(f"unknown text encoder {name!r}; configured: {sorted(self.encoders)} (text.encoders)")
        return self.encoders[name]


def _encoders(filled: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``text.encoders`` with the built-ins kept: the schema's default for the key is the
    built-in table, and it applies only when the key is absent, so the built-ins are merged
    under what the user gives here, entry by entry (a user entry may override only path_or_id
    of a built-in; a null entry keeps the built-in as it is)."""
    encoders_schema = schema()["properties"]["text"]["properties"]["encoders"]
    builtin = encoders_schema["default"]
    given = filled["encoders"]
    merged = {}
    for name in [*builtin, *(n for n in given if n not in builtin)]:
        entry = {**builtin.get(name, {}), **(given.get(name) or {})}
        if "kind" not in entry:
            kinds = encoders_schema["additionalProperties"]["properties"]["kind"]["enum"]
            raise ConfigError(
                f"config key text.encoders.{name}.kind: required for an encoder that is not built in (one of {kinds})"
            )
        entry.setdefault("path_or_id", None)  # absent: the kind's own source (minilm: the installed package)
        merged[name] = entry
    return merged


def text_settings(cfg: Mapping[str, Any] | None) -> TextSettings:
    """The ``text`` config section (all of it, part of it or None), filled from the schema,
    checked and typed. Raises ConfigError (a ValueError) naming the key."""
    filled = section("text", cfg)
    filled["encoders"] = _encoders(filled)
    if not filled["llm"]["template"]:
        filled["llm"]["template"] = DEFAULT_TEMPLATE
    template = filled["llm"]["template"]
    if "{n}" not in template or not ("{class_name}" in template or "{classes}" in template):
        raise ConfigError("config key text.llm.template: needs the placeholders {n} and {class_name} or {classes}")
    settings = build(TextSettings, filled, "text")
    settings.encoder_spec(settings.encoder)
    return settings


# What each text job reads, as plain data; its rule keeps the keys that change outputs as
# params (hmf.settings.result_params: a change shows as a params change), and the job adds the
# run-time keys from the config (hmf.settings.job_section) and turns them into settings with
# text_settings.


def prompts_params(text: TextSettings) -> dict[str, Any]:
    """The settings the prompts job reads: the source with its bank folder or its LLM settings.

    Without ``llm.api_key_env``: Snakemake stores params in ``.snakemake/metadata``, and that
    key names where a secret is (a pasted secret must never be stored); it is a run-time key
    (``x-reruns: false``), which the job reads from the config (:func:`hmf.settings.job_section`)."""
    if text.source == "bank":
        return {"source": "bank", "bank_dir": text.bank_dir}
    llm = as_dict(text.llm)
    del llm["api_key_env"]
    return {"source": "llm", "llm": llm}


def encoding_params(text: TextSettings, name: str) -> dict[str, Any]:
    """The settings an encode_text job reads: encoder ``name`` and how to run it."""
    return {
        "encoder": name,
        "encoders": {name: as_dict(text.encoder_spec(name))},
        "allow_download": text.allow_download,
        "device": text.device,
        "batch_size": text.batch_size,
        "max_length": text.max_length,
    }
