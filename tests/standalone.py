"""The preprocessing rules (rules/preprocess.smk) on their own: segmentation, patching and
feature extraction of a few slides by Snakemake, without the rest of the workflow (no sample
sheet, labels or models). For tests and benchmarks that run the rules as the workflow does.

The Snakefile written here defines the names that rules/common.smk gives those rules in the
workflow (results folders, slide paths and µm per pixel, the slide lists) and includes
rules/slide_helpers.smk and rules/preprocess.smk from this checkout.

    run = StandalonePreprocessing(folder, {"cmu": "cmu.svs"}, {"features": {"device": "cpu"}})
    proc = run.snakemake(*run.features("cmu"), cores="2")
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hmf.config import path_component
from hmf.features.io import FeaturePaths, feature_paths
from hmf.settings import section

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

SNAKEFILE = """\
import sys

sys.path.insert(0, {src!r})

from hmf.settings import section

# The rules read keys of these sections: filled with the schema's defaults, as the workflow does.
config["features"] = section("features", config.get("features"))
config["preprocessing"] = section("preprocessing", config.get("preprocessing"))
R, LOGS, BENCH = {results!r}, {logs!r}, {bench!r}
FEATURES_DIR = {features_dir!r}
_PATHS = {slides!r}
_MPP = {mpp!r}
SLIDE_IDS = list(_PATHS)
PREDICT_SLIDE_IDS = []


include: {helpers!r}
include: {rules!r}
"""


class StandalonePreprocessing:
    """A folder holding a Snakefile that runs the preprocessing rules on ``slides`` (id -> path)
    with ``config`` (the ``preprocessing:`` and ``features:`` sections); ``mpp``: µm per pixel of
    some slides (the others read it from the slide). Outputs go to ``results/<name>/``, logs to
    ``logs/<name>/`` and Snakemake benchmarks to ``benchmarks/<name>/`` inside ``folder``."""

    def __init__(
        self,
        folder: str | os.PathLike,
        slides: Mapping[str, str | os.PathLike],
        config: Mapping[str, Any],
        mpp: Mapping[str, float] | None = None,
        name: str = "t",
    ):
        self.folder = Path(folder)
        self.results, self.logs = f"results/{name}", f"logs/{name}"
        encoder = section("features", config.get("features"))["encoder"]
        self.features_dir = f"{self.results}/features/{path_component(encoder)}"
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "Snakefile").write_text(
            SNAKEFILE.format(
                src=str(SRC),
                results=self.results,
                logs=self.logs,
                bench=f"benchmarks/{name}",
                features_dir=self.features_dir,
                slides={slide: str(path) for slide, path in slides.items()},
                mpp={slide: (mpp or {}).get(slide) for slide in slides},
                helpers=str(ROOT / "rules" / "slide_helpers.smk"),
                rules=str(ROOT / "rules" / "preprocess.smk"),
            )
        )
        (self.folder / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))

    def features(self, slide: str) -> FeaturePaths:
        """The feature files and stats of ``slide``, relative to the folder."""
        return feature_paths(self.features_dir, slide)

    def snakemake(
        self, *targets: str, cores: str = "2", args: tuple[str, ...] = (), timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        """Snakemake run in the folder for ``targets`` (paths relative to it), with this
        checkout's ``src`` first on the jobs' path; the finished process (output captured)."""
        command = [
            str(Path(sys.executable).with_name("snakemake")),
            "--cores",
            cores,
            "--configfile",
            "config.yaml",
            "--quiet",
            "all",
            *args,
            "--",
            *targets,
        ]
        return subprocess.run(
            command,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ, PYTHONPATH=str(SRC)),
        )
