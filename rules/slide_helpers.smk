# Input functions of the per-slide preprocessing rules (rules/preprocess.smk). They need
# _PATHS, _MPP (slide id -> path, µm per pixel or None) and the config's `features` section;
# rules/common.smk includes this file, and so can a minimal Snakefile that runs
# preprocess.smk alone (the tests and benchmarks/bench_features.py).

from snakemake.exceptions import WorkflowError

from hmf.devices import wants_gpu
from hmf.features.threads import extraction_threads
from hmf.resources import extract_mem_mb, segment_mem_mb


def slide_path(wildcards):
    return _PATHS[wildcards.slide]


def slide_mpp(wildcards):
    """Per-slide µm per pixel from the sample sheet, or None to read it from the slide."""
    return _MPP.get(wildcards.slide)


def get_extraction_threads(wildcards, input):
    """Threads of an extraction job, from its patch count (hmf.features.threads): every core
    for a large slide, one for a tiny one. Without --cores (a cluster executor) the cap is
    --max-threads, else this host's cores."""
    try:
        cores = workflow.cores
    except WorkflowError:
        cores = workflow.resource_settings.max_threads
    return extraction_threads(input.coords, cores)


def get_features_gpus(wildcards):
    """GPUs an extraction job asks Snakemake for: one unless features.device is cpu (with
    none, the job's device auto is the CPU)."""
    return int(wants_gpu(config["features"]["device"]))
