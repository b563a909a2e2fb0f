"""Claim a device like a training job would, hold it, and record what the job was given."""

import os
import socket
import time

from hmf.atomic import write_json
from hmf.devices import claim_device
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
with claim_device("auto") as claim:
    started = time.time()
    time.sleep(snakemake.params.hold_s)
    finished = time.time()
write_json(
    snakemake.output[0],
    {
        "rule": snakemake.rule,
        "device": claim.device,
        "physical_id": claim.physical_id,
        "simulated": claim.simulated,
        "lock_path": str(claim.lock_path) if claim.lock_path else None,
        "started": started,
        "finished": finished,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "env": {
            key: os.environ.get(key)
            for key in (
                "SLURM_JOB_ID",
                "SLURM_JOB_NAME",
                "SLURM_JOB_GPUS",
                "SLURM_STEP_GPUS",
                "CUDA_VISIBLE_DEVICES",
                "SLURM_CPUS_PER_TASK",
            )
        },
    },
)
