"""What every workflow job that runs a model sets up first: the rule's log, the task, the
``training:`` settings, torch's threads and a claimed device (a GPU held with its lock).

The scripts stay a call into the package with their ``snakemake`` object:

    with model_job(snakemake) as job:
        train_slide_fold(..., training=job.training, device=job.device, progress_file=job.progress_file)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from hmf.logs import progress_stream, setup_logging
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
    setup_logging(snakemake.log[0])
    import torch

    from hmf.devices import claim_device

    training = training_settings(snakemake.params.training)
    task = job_task(snakemake)
    torch.set_num_threads(snakemake.threads)
    with claim_device(training.device, gpus=snakemake.resources.get("gpu", 0)) as claim:
        yield ModelJob(task, training, claim.compute_device, progress_stream(snakemake.log[0]))
