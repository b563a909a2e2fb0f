"""Collect the device records; record whether this ran inside a SLURM job (it must not)."""

import json
import os

from hmf.atomic import write_json
from hmf.logs import setup_logging

setup_logging(snakemake.log[0])
records = [json.loads(open(path).read()) for path in snakemake.input]
write_json(snakemake.output[0], {"jobs": records, "aggregate_slurm_job_id": os.environ.get("SLURM_JOB_ID")})
