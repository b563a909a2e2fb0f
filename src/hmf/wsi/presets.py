"""Segmentation and patching parameters: CLAM's presets, overridable key by key from config.

``preprocessing.preset`` names a preset; ``preprocessing.segmentation`` overrides any of its
segmentation keys and ``preprocessing.patching`` the patching keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


class PreprocessingConfigError(ValueError):
    """A ``preprocessing:`` config value is unknown or out of range."""


CONTOUR_FNS = ("four_pt", "four_pt_hard", "center", "basic")


@dataclass(frozen=True)
class SegmentationParams:
    sthresh: int = 8
    mthresh: int = 7
    close: int = 4
    use_otsu: bool = False
    a_t: float = 16.0
    a_h: float = 4.0
    max_n_holes: int = 8
    keep_ids: tuple[int, ...] = ()
    exclude_ids: tuple[int, ...] = ()
    seg_level: int = -1  # -1: automatic (the level nearest 64x at or finer than it)
    ref_patch_size: int = 512  # area filters are in units of this patch at level 0
    max_seg_dim: int = 16384  # a level larger than this on a side is read as a thumbnail
    vis_downsample: float = 64.0  # QC picture scale (shrunk for small slides)

    def validate(self) -> SegmentationParams:
        if not 0 <= self.sthresh <= 255:
            raise PreprocessingConfigError(f"preprocessing.segmentation.sthresh={self.sthresh}: must be 0-255")
        if self.mthresh < 1 or self.mthresh % 2 == 0:
            raise PreprocessingConfigError(
                f"preprocessing.segmentation.mthresh={self.mthresh}: the median blur kernel must be odd and >= 1"
            )
        if self.close < 0:
            raise PreprocessingConfigError(f"preprocessing.segmentation.close={self.close}: must be >= 0")
        for key in ("a_t", "a_h"):
            if getattr(self, key) < 0:
                raise PreprocessingConfigError(f"preprocessing.segmentation.{key}: must be >= 0")
        if self.max_n_holes < 0:
            raise PreprocessingConfigError("preprocessing.segmentation.max_n_holes: must be >= 0")
        if self.ref_patch_size <= 0 or self.max_seg_dim < 64 or self.vis_downsample < 1:
            raise PreprocessingConfigError(
                "preprocessing.segmentation: ref_patch_size must be > 0, max_seg_dim >= 64, vis_downsample >= 1"
            )
        return self


@dataclass(frozen=True)
class PatchingParams:
    mode: str = "level"  # level (CLAM: patch_level/patch_size px) | mpp (physical size)
    patch_level: int = 0
    patch_size: int = 256
    step_size: int | None = None  # None: same as patch_size (no overlap)
    target_mpp: float | None = None  # mode mpp: µm per pixel of the output patch
    mpp_tolerance: float = 0.05  # a level within this fraction of target_mpp counts as "at" it
    contour_fn: str = "four_pt"
    use_padding: bool = True
    stitch_downsample: float = 64.0

    @property
    def step(self) -> int:
        return self.patch_size if self.step_size is None else self.step_size

    def validate(self) -> PatchingParams:
        if self.mode not in ("level", "mpp"):
            raise PreprocessingConfigError(f"preprocessing.patching.mode={self.mode!r}: use 'level' or 'mpp'")
        if self.patch_size <= 0 or self.step <= 0:
            raise PreprocessingConfigError("preprocessing.patching: patch_size and step_size must be > 0")
        if self.patch_level < 0:
            raise PreprocessingConfigError("preprocessing.patching.patch_level: must be >= 0")
        if self.mode == "mpp" and not (self.target_mpp and self.target_mpp > 0):
            raise PreprocessingConfigError(
                "preprocessing.patching: mode 'mpp' needs target_mpp (µm per pixel, e.g. 0.5 for 20x)"
            )
        if self.contour_fn not in CONTOUR_FNS:
            raise PreprocessingConfigError(
                f"preprocessing.patching.contour_fn={self.contour_fn!r}: use one of {', '.join(CONTOUR_FNS)}"
            )
        if self.stitch_downsample < 1:
            raise PreprocessingConfigError("preprocessing.patching.stitch_downsample: must be >= 1")
        return self


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

_SEG_KEYS = {f.name for f in fields(SegmentationParams)}
_PATCH_KEYS = {f.name for f in fields(PatchingParams)}


def _apply(base, overrides: dict, allowed: set[str], section: str):
    unknown = set(overrides) - allowed
    if unknown:
        raise PreprocessingConfigError(
            f"preprocessing.{section}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    clean = {}
    for key, value in overrides.items():
        if key in ("keep_ids", "exclude_ids"):
            value = tuple(int(v) for v in (value or ()))
        clean[key] = value
    try:
        return replace(base, **clean)
    except TypeError as err:
        raise PreprocessingConfigError(f"preprocessing.{section}: {err}") from None


@dataclass(frozen=True)
class PreprocessingSettings:
    preset: str
    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    patching: PatchingParams = field(default_factory=PatchingParams)

    def as_dict(self) -> dict:
        return {"preset": self.preset, "segmentation": asdict(self.segmentation), "patching": asdict(self.patching)}


def resolve_preprocessing(config: dict | None) -> PreprocessingSettings:
    """Turn the ``preprocessing:`` config section into validated parameters.

    The preset gives defaults for both segmentation (sthresh ... max_n_holes) and patching
    (use_padding, contour_fn); ``segmentation`` and ``patching`` dicts override single keys.
    """
    config = dict(config or {})
    preset = config.get("preset", "bwh_biopsy")
    if preset not in PRESETS:
        raise PreprocessingConfigError(f"preprocessing.preset={preset!r}: use one of {', '.join(PRESETS)}")
    values = PRESETS[preset]
    seg = replace(SegmentationParams(), **{k: v for k, v in values.items() if k in _SEG_KEYS})
    patch = replace(PatchingParams(), **{k: v for k, v in values.items() if k in _PATCH_KEYS})
    unknown = set(config) - {"preset", "segmentation", "patching"}
    if unknown:
        raise PreprocessingConfigError(f"preprocessing: unknown key(s) {sorted(unknown)}")
    seg = _apply(seg, dict(config.get("segmentation") or {}), _SEG_KEYS, "segmentation").validate()
    patch = _apply(patch, dict(config.get("patching") or {}), _PATCH_KEYS, "patching").validate()
    return PreprocessingSettings(preset=preset, segmentation=seg, patching=patch)
