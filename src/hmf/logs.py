"""Logging set-up shared by the workflow scripts: Python logging and progress bars to the rule's
log, and any uncaught exception's traceback logged there too (not only to Snakemake's stderr,
which on a cluster is another file)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def _log_uncaught(previous):
    def hook(exc_type, exc, tb):
        if not issubclass(exc_type, KeyboardInterrupt):
            logging.getLogger("hmf").critical(
                "job failed: %s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb)
            )
            for handler in logging.getLogger().handlers:
                handler.flush()
        previous(exc_type, exc, tb)

    hook.hmf_uncaught = True
    return hook


def setup_logging(log_file: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send the root logger to ``log_file`` (the rule's ``log:``) or to stderr, and log any
    uncaught exception (with its traceback) there before the process exits."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        open(log_file, "w").close()  # start empty, then append: progress bars share the file
        handler: logging.Handler = logging.FileHandler(log_file, mode="a")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    if not getattr(sys.excepthook, "hmf_uncaught", False):
        sys.excepthook = _log_uncaught(sys.excepthook)
    import hmf

    log.info("hmf from %s (Python %s)", Path(hmf.__file__).parent, sys.version.split()[0])
    return root


def progress_stream(log_file: str | None):
    """A text stream for tqdm: the rule's log when there is one (appended), else stderr."""
    if log_file:
        return open(log_file, "a", buffering=1)
    return sys.stderr
