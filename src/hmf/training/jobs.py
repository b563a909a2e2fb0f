"""What every workflow job that runs a model sets up first: :func:`hmf.devices.torch_job` with
the ``training:`` settings (the rule's log, torch's threads, a claimed device), and the task.

The scripts stay a call into the package with their ``snakemake`` object:

    with model_job(snakemake) as job:
        train_slide_fold(..., training=job.training, device=job.device, progress_file=job.progress_file)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from hmf.devices import torch_job
from hmf.tasks import Task, get_task
from hmf.training.settings import TrainingSettings, training_settings


@dataclass(frozen=True)
class ModelJob:
    task: Task
    training: TrainingSettings
    device: str  # the claimed compute device, e.g. "cpu" or "cuda:0"
    progress_file: TextIO  # the rule's log (progress bars), or stderr


def job_task(snakemake: Any) -> Task:
    """The task of the job's ``params: task, classes``."""
    return get_task(snakemake.params.task, snakemake.params.classes)


@contextmanager
def model_job(snakemake: Any) -> Iterator[ModelJob]:
    """Set up a model job from its ``snakemake`` object (``log``, ``threads``, ``resources.gpu``
    and ``params: task, classes, training``) and hold its device until the block ends. The log
    is set up first, so that any failure after it is written there."""
    with torch_job(snakemake, "training", training_settings, set_threads=True) as job:
        yield ModelJob(job_task(snakemake), job.settings, str(job.device), job.progress_file)
