"""Opening whole-slide images with clear errors, reading their resolution and regions.

OpenSlide reads the vendor formats (SVS, NDPI, MRXS, tiled TIFF, ...). Plain raster images
(PNG, JPEG, BMP) are opened through OpenSlide's PIL-backed ``ImageSlide`` so that small
regions can be used as single-level slides. Every failure becomes a :class:`SlideError` that
names the slide and the cause.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from pathlib import Path

import numpy as np

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
# Resolutions outside this range (µm per pixel) are treated as missing: TIFF writers often
# put a meaningless 72 dpi in the resolution tags.
PLAUSIBLE_MPP = (0.05, 100.0)
_UNIT_UM = {"centimeter": 1e4, "inch": 25400.0, "millimeter": 1e3, "micrometer": 1.0}
# Read large downsampled images in tiles of this many pixels (at the source level) per side.
READ_TILE = 4096


class SlideError(RuntimeError):
    """A slide could not be opened or read; the message names the slide and the cause."""


def _positive_mpp(value) -> float | None:
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(mpp) or not PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]:
        return None
    return mpp


def mpp_from_properties(props) -> float | None:
    """Level-0 µm per pixel from OpenSlide properties, or None when the slide does not say."""
    mpp_x = _positive_mpp(props.get("openslide.mpp-x"))
    mpp_y = _positive_mpp(props.get("openslide.mpp-y"))
    if mpp_x and mpp_y:
        return (mpp_x + mpp_y) / 2
    if mpp_x or mpp_y:
        return mpp_x or mpp_y
    # Generic TIFF: resolution tags (pixels per unit).
    unit = str(props.get("tiff.ResolutionUnit", "")).lower()
    xres = props.get("tiff.XResolution")
    if unit in _UNIT_UM and xres:
        try:
            return _positive_mpp(_UNIT_UM[unit] / float(xres))
        except (ValueError, ZeroDivisionError):
            return None
    return None


class Slide:
    """A whole-slide image opened for reading.

    ``mpp`` is the level-0 resolution in µm per pixel: the ``mpp`` argument (the sample
    sheet's per-slide override) when given, else the slide's metadata, else None.
    The OpenSlide handle is opened lazily per process, so a ``Slide`` can be handed to
    DataLoader worker processes, each of which then reads through its own handle.
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None, mpp: float | None = None):
        self.path = Path(path)
        self.name = name or self.path.stem
        self._handle = None
        self._pid = None
        if not self.path.exists():
            raise SlideError(f"slide {self.name}: file {self.path} does not exist")
        if not self.path.is_file():
            raise SlideError(f"slide {self.name}: {self.path} is not a file")
        handle = self._open()
        self.level_count: int = handle.level_count
        self.level_dimensions: list[tuple[int, int]] = [tuple(map(int, d)) for d in handle.level_dimensions]
        self.dimensions: tuple[int, int] = self.level_dimensions[0]
        w0, h0 = self.dimensions
        # Per-axis downsample of each level, measured from the level sizes (as CLAM does):
        # the pyramid's stated factors are often rounded.
        self.level_downsamples: list[tuple[float, float]] = [(w0 / w, h0 / h) for (w, h) in self.level_dimensions]
        self.properties = dict(handle.properties)
        if w0 <= 0 or h0 <= 0:
            raise SlideError(f"slide {self.name}: {self.path} has an empty level 0 ({w0} x {h0})")
        if mpp is not None and not (isinstance(mpp, float) and math.isnan(mpp)):
            checked = _positive_mpp(mpp)
            if checked is None:
                raise SlideError(
                    f"slide {self.name}: mpp override {mpp!r} is not a plausible resolution "
                    f"({PLAUSIBLE_MPP[0]}-{PLAUSIBLE_MPP[1]} µm per pixel)"
                )
            self.mpp: float | None = checked
            self.mpp_source = "override"
        else:
            self.mpp = mpp_from_properties(self.properties)
            self.mpp_source = "metadata" if self.mpp is not None else "unknown"

    # -- handle -----------------------------------------------------------------------
    def _open(self):
        import openslide

        try:
            handle = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError:
            if self.path.suffix.lower() not in RASTER_SUFFIXES:
                raise SlideError(
                    f"slide {self.name}: {self.path} is not in a format OpenSlide can read "
                    f"(unsupported or corrupt file)"
                ) from None
            try:
                from PIL import Image

                with Image.open(self.path) as probe:
                    probe.verify()
                handle = openslide.ImageSlide(str(self.path))
            except Exception as err:  # PIL raises many types for broken images
                raise SlideError(f"slide {self.name}: {self.path} is not a readable image: {err}") from None
        except openslide.OpenSlideError as err:
            raise SlideError(f"slide {self.name}: OpenSlide cannot open {self.path}: {err}") from None
        except Exception as err:
            raise SlideError(f"slide {self.name}: cannot open {self.path}: {err}") from None
        self._handle = handle
        self._pid = os.getpid()
        # OpenSlide handles are thread-safe; the PIL image behind an ImageSlide is not.
        self._read_lock = threading.Lock() if isinstance(handle, openslide.ImageSlide) else None
        return handle

    @property
    def handle(self):
        if self._handle is None or self._pid != os.getpid():
            return self._open()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = None
        state["_pid"] = None
        state["_read_lock"] = None
        return state

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- geometry ---------------------------------------------------------------------
    def level_mpp(self, level: int) -> float | None:
        if self.mpp is None:
            return None
        dx, dy = self.level_downsamples[level]
        return self.mpp * (dx + dy) / 2

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (OpenSlide's rule)."""
        best = 0
        for level, (dx, dy) in enumerate(self.level_downsamples):
            if max(dx, dy) <= downsample * (1 + 1e-6):
                best = level
        return best

    def require_mpp(self, purpose: str) -> float:
        if self.mpp is None:
            raise SlideError(
                f"slide {self.name}: {purpose} needs the slide's resolution, but {self.path} has no "
                f"mpp metadata (openslide.mpp-x or TIFF resolution tags) and the sample sheet gives "
                f"no mpp for it; add an mpp column value for this slide"
            )
        return self.mpp

    # -- pixels -----------------------------------------------------------------------
    def read_region_image(self, location: tuple[int, int], level: int, size: tuple[int, int]):
        """RGB ``PIL.Image`` of ``size`` pixels at ``level``; ``location`` in level-0 px.

        Pixels outside the slide come back black (transparent pixels with the alpha dropped),
        as in CLAM's padded patches.
        """
        if not 0 <= level < self.level_count:
            raise SlideError(f"slide {self.name}: level {level} does not exist (slide has {self.level_count})")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise SlideError(f"slide {self.name}: cannot read an empty region of {w} x {h} px")
        handle = self.handle
        try:
            with self._read_lock or contextlib.nullcontext():
                region = handle.read_region((int(location[0]), int(location[1])), level, (w, h))
            return region.convert("RGB")  # drops alpha; no compositing
        except Exception as err:
            raise SlideError(
                f"slide {self.name}: reading {w} x {h} px at level {level}, level-0 position "
                f"{tuple(map(int, location))} of {self.path} failed: {err}"
            ) from None

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 array (h, w, 3) of :meth:`read_region_image`."""
        return np.array(self.read_region_image(location, level, size))  # writable copy

    def read_downsampled(self, downsample: float) -> tuple[np.ndarray, tuple[float, float]]:
        """The whole slide at about ``downsample`` times smaller than level 0.

        Reads the coarsest pyramid level at or finer than ``downsample`` tile by tile and
        shrinks each tile, so memory stays bounded even for single-level slides. Returns the
        RGB image and its exact per-axis downsample (level-0 size / image size).
        """
        import cv2

        downsample = max(float(downsample), 1.0)
        w0, h0 = self.dimensions
        out_w, out_h = max(1, round(w0 / downsample)), max(1, round(h0 / downsample))
        level = self.best_level_for_downsample(downsample)
        lw, lh = self.level_dimensions[level]
        ldx, ldy = self.level_downsamples[level]
        if (lw, lh) == (out_w, out_h):
            return self.read_region((0, 0), level, (lw, lh)), (ldx, ldy)
        sx, sy = out_w / lw, out_h / lh  # output px per level px
        out = np.zeros((out_h, out_w, 3), dtype=np.uint8)
        for ty in range(0, lh, READ_TILE):
            for tx in range(0, lw, READ_TILE):
                tw, th = min(READ_TILE, lw - tx), min(READ_TILE, lh - ty)
                x0, y0 = round(tx * sx), round(ty * sy)
                x1, y1 = round((tx + tw) * sx), round((ty + th) * sy)
                if x1 <= x0 or y1 <= y0:
                    continue
                tile = self.read_region((round(tx * ldx), round(ty * ldy)), level, (tw, th))
                out[y0:y1, x0:x1] = cv2.resize(tile, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        return out, (w0 / out_w, h0 / out_h)


def open_slide(path: str | os.PathLike, name: str | None = None, mpp: float | None = None) -> Slide:
    """Open ``path`` as a :class:`Slide`; raises :class:`SlideError` on any failure."""
    return Slide(path, name=name, mpp=mpp)
