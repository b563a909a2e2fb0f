"""Classification tasks: class lists per level and how patient labels relate to slide labels."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Task:
    """A classification task.

    ``slide_classes`` is None when slides carry no labels of their own (TCGA subtyping: a
    slide is trained with its patient's label). ``labelsets`` names the class-description
    sets (prompts) used for each level; ``ordinal`` levels get quadratic weighted kappa.
    """

    name: str
    patient_classes: tuple[str, ...]
    slide_classes: tuple[str, ...] | None = None
    labelsets: dict[str, str] = field(default_factory=dict)
    ordinal: tuple[str, ...] = ()
    pn_rule: bool = False

    def classes(self, level: str) -> tuple[str, ...]:
        if level == "patient":
            return self.patient_classes
        if level == "slide":
            return self.slide_classes if self.slide_classes is not None else self.patient_classes
        raise ValueError(f"unknown level {level!r}: expected 'slide' or 'patient'")

    @property
    def slides_inherit_patient_label(self) -> bool:
        return self.slide_classes is None


CAMELYON17_SLIDE = ("negative", "itc", "micro", "macro")
CAMELYON17_PATIENT = ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")

TASKS: dict[str, Task] = {
    "camelyon17": Task(
        name="camelyon17",
        slide_classes=CAMELYON17_SLIDE,
        patient_classes=CAMELYON17_PATIENT,
        labelsets={"slide": "camelyon17_slide", "patient": "camelyon17_patient"},
        ordinal=("slide", "patient"),
        pn_rule=True,
    ),
    "tcga_brca": Task(
        name="tcga_brca",
        patient_classes=("IDC", "ILC"),
        labelsets={"slide": "tcga_brca", "patient": "tcga_brca"},
    ),
    "tcga_nsclc": Task(
        name="tcga_nsclc",
        patient_classes=("LUAD", "LUSC"),
        labelsets={"slide": "tcga_nsclc", "patient": "tcga_nsclc"},
    ),
}


def get_task(name: str, custom: dict | None = None) -> Task:
    """Look up a built-in task, or build ``custom`` from config (``patient_classes`` and optional
    ``slide_classes``, ``labelset``)."""
    if name in TASKS:
        return TASKS[name]
    if name == "custom":
        if not custom or not custom.get("patient_classes"):
            raise ValueError("task 'custom' needs dataset.classes.patient_classes in the config")
        labelset = custom.get("labelset", "custom")
        slide = custom.get("slide_classes")
        for key in ("patient_classes", "slide_classes"):
            for name in custom.get(key) or ():
                check_class_name(name, f"dataset.classes.{key}")
        return Task(
            name="custom",
            patient_classes=tuple(custom["patient_classes"]),
            slide_classes=tuple(slide) if slide else None,
            labelsets={"slide": labelset, "patient": labelset},
            ordinal=tuple(custom.get("ordinal", ())),
        )
    raise ValueError(f"unknown task {name!r}: choose one of {sorted(TASKS) + ['custom']}")


def check_class_name(name, key: str) -> None:
    """A class name shows in tables, figures and CSV headers (``prob_<class>``): printable
    characters only (no control or bidirectional-formatting characters, which can make one
    label display as another) and no comma. ValueError naming the config key."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"config key {key}: class name {name!r} must be a non-empty string")
    bad = sorted({c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp")})
    if bad or not name.isprintable():
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad) or "non-printable characters"
        raise ValueError(
            f"config key {key}: class name {name!r} contains {shown}; class names may hold printable "
            f"characters only (no control or bidirectional-formatting characters)"
        )
    if "," in name:
        raise ValueError(f"config key {key}: class name {name!r} contains a comma, which splits CSV cells and lists")


def pn_stage(slide_labels: list[str]) -> str:
    """CAMELYON17 pN stage of a patient from its lymph-node slide labels.

    ITC-only nodes do not count as positive; macro-metastases with more than three
    positive nodes make pN2.
    """
    unknown = set(slide_labels) - set(CAMELYON17_SLIDE)
    if unknown:
        raise ValueError(f"not CAMELYON17 slide labels: {sorted(unknown)}")
    pos = sum(label in ("micro", "macro") for label in slide_labels)
    macro = sum(label == "macro" for label in slide_labels)
    itc = sum(label == "itc" for label in slide_labels)
    return pn_stage_from_counts(pos, macro, itc)


def pn_stage_from_counts(positive: int, macro: int, itc: int) -> str:
    """:func:`pn_stage` from a patient's counts of positive (micro or macro), macro and ITC nodes."""
    pos = positive
    if pos == 0:
        return "pN0(i+)" if itc > 0 else "pN0"
    if macro == 0:
        return "pN1mi"
    return "pN1" if pos <= 3 else "pN2"
