"""Logging set-up shared by the workflow scripts: Python logging and progress bars to the rule's log."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(log_file: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send the root logger to ``log_file`` (the rule's ``log:``) or to stderr."""
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
    return root


def progress_stream(log_file: str | None):
    """A text stream for tqdm: the rule's log when there is one (appended), else stderr."""
    if log_file:
        return open(log_file, "a", buffering=1)
    return sys.stderr
