"""Imported first by every workflow script: this checkout's ``src/`` goes to the front of
``sys.path``, so a job runs the code of the workflow it belongs to, whichever ``hmf`` the
environment has installed (or none, as in the rules' conda environment). Snakemake puts this
folder on the jobs' ``sys.path``."""

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

if "hmf" in sys.modules and not Path(sys.modules["hmf"].__file__).resolve().is_relative_to(SRC):
    raise ImportError(f"hmf was imported from {sys.modules['hmf'].__file__} before this workflow's {SRC}")
if sys.path[:1] != [str(SRC)]:
    sys.path.insert(0, str(SRC))
