"""Class descriptions shipped with the package (``hmf/text/bank/<labelset>.json``).

A bank file holds ``labelset``, ``classes`` (in task order) and ``descriptions``
(class -> list of sentences). A folder given as ``text.bank_dir`` is searched first, so a
custom task can bring its own bank in the same format.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

SHIPPED_BANK = resources.files("hmf.text") / "bank"


def shipped_labelsets() -> list[str]:
    """Label sets with a bank shipped in the package."""
    return sorted(p.name[: -len(".json")] for p in SHIPPED_BANK.iterdir() if p.name.endswith(".json"))


def bank_path(labelset: str, bank_dir: str | Path | None = None) -> Path:
    """The bank file of ``labelset``: ``bank_dir/<labelset>.json`` if present, else the shipped one."""
    if bank_dir:
        candidate = Path(bank_dir) / f"{labelset}.json"
        if candidate.is_file():
            return candidate
    shipped = SHIPPED_BANK / f"{labelset}.json"
    if shipped.is_file():
        return Path(str(shipped))
    where = f"{bank_dir} or the package" if bank_dir else "the package"
    raise FileNotFoundError(
        f"no description bank for label set {labelset!r} in {where}; shipped banks: {shipped_labelsets()}. "
        f"Put a {labelset}.json (keys: labelset, classes, descriptions) in the folder named by "
        f"text.bank_dir, or set text.source: llm"
    )


def bank_sha256(labelset: str, bank_dir: str | Path | None = None) -> str:
    """sha256 of the bank file's bytes: the bank's identity in the prompts provenance."""
    return hashlib.sha256(bank_path(labelset, bank_dir).read_bytes()).hexdigest()


def clean_descriptions(items, where: str) -> list[str]:
    """Strip whitespace, drop empty strings and duplicates (case-insensitive), keep order."""
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list of strings, got {type(items).__name__}")
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{where}: expected strings, got {type(item).__name__} {item!r}")
        text = " ".join(item.split())
        key = text.casefold()
        if text and key not in seen:
            seen.add(key)
            out.append(text)
    return out


def load_bank(
    labelset: str, classes: list[str] | tuple[str, ...], bank_dir: str | Path | None = None, min_per_class: int = 1
) -> dict[str, list[str]]:
    """Descriptions of ``labelset`` per class, in the order of ``classes``.

    Raises ValueError naming the file when the bank's classes differ from ``classes`` or a
    class has fewer than ``min_per_class`` distinct descriptions.
    """
    path = bank_path(labelset, bank_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"description bank {path} is not valid JSON: {err}") from err
    descriptions = data.get("descriptions") if isinstance(data, dict) else None
    if not isinstance(descriptions, dict):
        raise ValueError(f"description bank {path}: missing 'descriptions' (class -> list of strings)")
    if set(descriptions) != set(classes):
        raise ValueError(
            f"description bank {path} has classes {sorted(descriptions)} but label set {labelset!r} "
            f"needs exactly {list(classes)}"
        )
    out = {}
    for name in classes:
        texts = clean_descriptions(descriptions[name], f"{path} class {name!r}")
        if len(texts) < min_per_class:
            raise ValueError(
                f"description bank {path} class {name!r}: {len(texts)} distinct descriptions, "
                f"need at least {min_per_class}"
            )
        out[name] = texts
    return out
