"""The prompts file ``R/prompts/<labelset>.json``: class descriptions with their provenance.

Layout::

    {"labelset": ..., "classes": [...],
     "descriptions": {"<class>": ["...", ...], ...},
     "provenance": {"source": "bank" | "llm", "model": ..., "template_sha256": ...,
                    "classes": [...], "created": ..., ...}}

``text.source: bank`` copies the shipped bank (its ``template_sha256`` is the sha256 of the
bank file); ``text.source: llm`` asks an LLM (``hmf.text.llm``; ``template_sha256`` is the
sha256 of ``text.llm.template``).

Caching and hand edits. The file is a cache keyed by (source, model, template sha256,
classes). :func:`make_prompts` leaves an existing file untouched when its provenance holds the
same key, so the LLM is called again only when the template, the model or the classes change
(or the file is deleted). The descriptions may therefore be edited by hand: edit the lists
under ``descriptions`` and leave ``provenance`` as it is; reruns keep the edits, and the text
embeddings are recomputed because the file is newer. The Snakemake rule passes the same key
as ``params:`` (visible as a params change in ``snakemake -n``) and marks the output
``update()`` so Snakemake does not delete the file before the job decides to keep it. To get
fresh descriptions, delete the file. The API key is never part of the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hmf.atomic import write_json
from hmf.tasks import Task
from hmf.text.bank import bank_path, bank_sha256, clean_descriptions, load_bank
from hmf.text.llm import generate_descriptions, public_url
from hmf.text.settings import TextSettings

log = logging.getLogger(__name__)


def labelset_classes(task: Task, labelset: str) -> tuple[str, ...]:
    """The classes described by ``labelset`` in ``task`` (the level whose label set it is)."""
    for level in ("slide", "patient"):
        if task.labelsets.get(level) == labelset:
            return task.classes(level)
    raise ValueError(f"task {task.name!r} has no label set {labelset!r}; its label sets: {task.labelsets}")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(labelset: str, classes: list[str] | tuple[str, ...], text: TextSettings) -> dict[str, Any]:
    """What decides whether cached descriptions are still valid: source, model, template sha256, classes."""
    if text.source == "bank":
        return {
            "source": "bank",
            "model": None,
            "template_sha256": bank_sha256(labelset, text.bank_dir),
            "classes": list(classes),
        }
    llm = text.llm
    return {
        "source": "llm",
        "model": llm.model,
        "template_sha256": sha256_text(llm.template),
        "classes": list(classes),
    }


def read_prompts(path: str | Path) -> dict[str, Any]:
    """Load and check a prompts file; raise ValueError naming the file and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"prompts file {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("descriptions"), dict):
        raise ValueError(f"prompts file {path}: missing 'descriptions' (class -> list of strings)")
    classes = data.get("classes") or list(data["descriptions"])
    if set(classes) != set(data["descriptions"]):
        raise ValueError(
            f"prompts file {path}: 'classes' {classes} differ from the classes under 'descriptions' "
            f"{sorted(data['descriptions'])}"
        )
    for name in classes:
        texts = clean_descriptions(data["descriptions"][name], f"prompts file {path} class {name!r}")
        if not texts:
            raise ValueError(f"prompts file {path} class {name!r}: no descriptions")
        data["descriptions"][name] = texts
    data["classes"] = list(classes)
    return data


def cached_is_current(path: str | Path, key: dict[str, Any]) -> bool:
    """True when ``path`` exists, is a valid prompts file and its provenance matches ``key``."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        data = read_prompts(path)
    except ValueError as err:
        log.warning("existing %s is not usable (%s); it will be replaced", path, err)
        return False
    provenance = data.get("provenance") or {}
    stale = {k: (provenance.get(k), v) for k, v in key.items() if provenance.get(k) != v}
    if stale:
        log.info("existing %s is out of date (cached vs wanted: %s)", path, stale)
        return False
    return True


def make_prompts(
    output: str | Path, labelset: str, classes: list[str] | tuple[str, ...], text: TextSettings
) -> dict[str, Any]:
    """Write the prompts file of ``labelset`` unless the one at ``output`` is current; return its content.

    The file is written atomically and only once every class has valid descriptions.
    """
    classes = list(classes)
    key = cache_key(labelset, classes, text)
    if cached_is_current(output, key):
        log.info(
            "keeping %s: provenance matches (source=%s, model=%s, template sha256=%s)",
            output,
            key["source"],
            key["model"],
            key["template_sha256"][:12],
        )
        return read_prompts(output)
    provenance: dict[str, Any] = dict(key)
    if text.source == "bank":
        descriptions = load_bank(labelset, classes, text.bank_dir)
        provenance["bank_file"] = bank_path(labelset, text.bank_dir).name
        log.info("descriptions of %s from the bank %s", labelset, bank_path(labelset, text.bank_dir))
    else:
        llm = text.llm
        log.info(
            "asking %s (model %s) for %d descriptions per class of %s",
            public_url(llm.base_url),
            llm.model,
            llm.n_per_class,
            classes,
        )
        descriptions, requests = generate_descriptions(classes, llm)
        provenance.update(
            base_url=public_url(llm.base_url) if llm.base_url else None,
            temperature=llm.temperature,
            seed=llm.seed,
            n_per_class=llm.n_per_class,
            requests=requests,
        )
    provenance["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    data = {"labelset": labelset, "classes": classes, "descriptions": descriptions, "provenance": provenance}
    write_json(output, data)
    log.info("wrote %s: %s", output, {c: len(v) for c, v in descriptions.items()})
    return data
