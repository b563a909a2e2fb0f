"""JPEG copies of figures for the Snakemake report, which embeds every picture it shows: a
photographic figure (a slide thumbnail under attention colours, a patch montage) takes about a
quarter of its PNG's bytes as a JPEG. The PNGs stay on disk at full quality."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from hmf.atomic import atomic_path

# High enough that the figures' text and colour bars stay clean.
REPORT_JPEG_QUALITY = 90


def jpeg_copy(src: str | os.PathLike, dst: str | os.PathLike, quality: int = REPORT_JPEG_QUALITY) -> tuple[int, int]:
    """``src`` (any picture Pillow reads; transparency flattened onto white) as an RGB JPEG at
    ``dst``, written atomically; returns its pixel size, which is ``src``'s."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"picture {src} does not exist")
    with Image.open(src) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, "white")
            flat.paste(rgba, mask=rgba.getchannel("A"))
        else:
            flat = image.convert("RGB")
    with atomic_path(dst) as tmp:
        flat.save(tmp, format="JPEG", quality=int(quality), optimize=True)
    return flat.size
