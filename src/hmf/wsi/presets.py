"""CLAM's segmentation and patching presets (``preprocessing.preset``).

Each preset gives the keys of ``preprocessing.segmentation`` and ``preprocessing.patching``
that the config leaves out; the schema holds every other default and every range, and
``hmf.wsi.settings`` builds the settings from both.
"""

from __future__ import annotations

# CLAM presets/*.csv (seg_level and vis_level are -1 in all three).
PRESETS: dict[str, dict] = {
    "bwh_biopsy": dict(
        sthresh=15,
        mthresh=11,
        close=2,
        use_otsu=False,
        a_t=1,
        a_h=1,
        max_n_holes=2,
        use_padding=True,
        contour_fn="four_pt",
    ),
    "tcga": dict(
        sthresh=8,
        mthresh=7,
        close=4,
        use_otsu=False,
        a_t=16,
        a_h=4,
        max_n_holes=8,
        use_padding=True,
        contour_fn="four_pt",
    ),
    "bwh_resection": dict(
        sthresh=15,
        mthresh=11,
        close=4,
        use_otsu=False,
        a_t=100,
        a_h=16,
        max_n_holes=8,
        use_padding=True,
        contour_fn="four_pt",
    ),
}
