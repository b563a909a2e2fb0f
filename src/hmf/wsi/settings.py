"""The ``preprocessing:`` config section as typed settings: tissue segmentation
(:class:`SegmentationParams`) and patching (:class:`PatchingParams`).

Built with :mod:`hmf.settings` from the section as the schema
(``config/schema/preprocessing.schema.yaml``) fills and checks it: the schema holds every
default and range, these classes none. The keys a CLAM preset sets (``hmf.wsi.presets``) have
no schema default: ``preprocessing.preset`` fills those the config leaves out.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from hmf.config import ConfigError
from hmf.settings import as_dict, build, section
from hmf.wsi.presets import PRESETS


@dataclasses.dataclass(frozen=True)
class SegmentationParams:
    sthresh: int  # saturation threshold
    mthresh: int  # median blur kernel (odd)
    close: int
    use_otsu: bool
    a_t: float
    a_h: float
    max_n_holes: int
    keep_ids: tuple[int, ...]
    exclude_ids: tuple[int, ...]
    seg_level: int  # -1: automatic (the level nearest 64x at or finer than it)
    ref_patch_size: int  # area filters are in units of this patch at level 0
    max_seg_dim: int  # a level larger than this on a side is read as a thumbnail
    vis_downsample: float  # QC picture scale (shrunk for small slides)


@dataclasses.dataclass(frozen=True)
class PatchingParams:
    mode: str  # level (CLAM: patch_level/patch_size px) | mpp (physical size)
    patch_level: int
    patch_size: int
    step_size: int | None  # None: same as patch_size (no overlap)
    target_mpp: float | None  # mode mpp: µm per pixel of the output patch
    mpp_tolerance: float  # a level within this fraction of target_mpp counts as "at" it
    contour_fn: str
    use_padding: bool
    stitch_downsample: float

    @property
    def step(self) -> int:
        return self.patch_size if self.step_size is None else self.step_size


@dataclasses.dataclass(frozen=True)
class PreprocessingSettings:
    preset: str
    segmentation: SegmentationParams
    patching: PatchingParams

    def as_dict(self) -> dict:
        return as_dict(self)


_SUBSECTIONS = {"segmentation": SegmentationParams, "patching": PatchingParams}
# Keys of the `preprocessing:` section that the workflow reads (job layout), not the steps.
WORKFLOW_KEYS = ("slides_per_job",)


def resolve_preprocessing(config: Mapping[str, Any] | None) -> PreprocessingSettings:
    """The ``preprocessing:`` section (None: empty) as checked settings: the schema's defaults
    and ranges, the preset's values for the keys the config leaves out, the config's overrides
    key by key. Raises ConfigError naming the key."""
    filled = section("preprocessing", config)
    preset = PRESETS[filled["preset"]]
    for name, cls in _SUBSECTIONS.items():
        keys = {f.name for f in dataclasses.fields(cls)}
        for key, value in preset.items():
            if key in keys:
                filled[name].setdefault(key, copy.deepcopy(value))
    filled = section("preprocessing", filled)  # the preset's values are in range too
    for key in WORKFLOW_KEYS:
        filled.pop(key)
    settings = build(PreprocessingSettings, filled, "preprocessing")
    _check(settings)
    return settings


def _check(settings: PreprocessingSettings) -> None:
    """What the schema's ranges cannot say."""
    if settings.segmentation.mthresh % 2 == 0:
        raise ConfigError(
            f"config key preprocessing.segmentation.mthresh: {settings.segmentation.mthresh}: "
            "the median blur kernel must be odd"
        )
    if settings.patching.mode == "mpp" and settings.patching.target_mpp is None:
        raise ConfigError(
            "config key preprocessing.patching.target_mpp: mode 'mpp' needs target_mpp (µm per pixel, e.g. 0.5 for 20x)"
        )
