"""Which slides get attention heatmaps, decided when the workflow is parsed.

Each slide is drawn with the model of the fold that tested it (the model never trained on
it). By default that is, per fold, the first ``per_class`` test slides (by slide id) of each
slide class; a configured list names the slides instead.
"""

from __future__ import annotations

import pandas as pd


def heatmap_jobs(
    sheet: pd.DataFrame, test_patients: list[set[str]], slides: list[str] | None = None, per_class: int = 1
) -> list[tuple[int, str]]:
    """(fold, slide_id) pairs, sorted by fold then slide id.

    ``slides``: explicit slide ids, each drawn in the fold that tests its patient; empty or
    None: per fold, the first ``per_class`` test slides of each slide class.
    """
    frame = sheet[["slide_id", "patient_id", "slide_label"]].astype(str)
    fold_of = {p: k for k, patients in enumerate(test_patients) for p in patients}
    jobs: set[tuple[int, str]] = set()
    if slides:
        known = dict(zip(frame["slide_id"], frame["patient_id"]))
        unknown = [s for s in slides if s not in known]
        if unknown:
            raise ValueError(f"report.heatmap_slides: slide(s) not in the sample sheet: {', '.join(unknown[:10])}")
        for slide in slides:
            if known[slide] not in fold_of:
                raise ValueError(f"report.heatmap_slides: patient {known[slide]} of slide {slide} is in no test fold")
            jobs.add((fold_of[known[slide]], slide))
    else:
        for k, patients in enumerate(test_patients):
            tested = frame[frame["patient_id"].isin(patients)].sort_values("slide_id")
            for _, group in tested.groupby("slide_label", sort=True):
                jobs.update((k, s) for s in group["slide_id"].head(max(int(per_class), 0)))
    return sorted(jobs)
