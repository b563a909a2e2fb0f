# Input functions of the per-slide preprocessing rules (rules/preprocess.smk). They need
# SLIDE_IDS and PREDICT_SLIDE_IDS (the training and the new slides), _PATHS, _MPP (slide id ->
# path, µm per pixel or None), FEATURES_DIR and the config's `features` section;
# rules/common.smk includes this file, and so can a minimal Snakefile that runs preprocess.smk
# alone (tests/standalone.py, for the tests and benchmarks/bench_features.py).

import errno
import os

from snakemake.exceptions import WorkflowError

from hmf.devices import wants_gpu
from hmf.batches import batch_folder, batch_id, plan_batches, read_manifests, read_singles
from hmf.features.io import feature_paths
from hmf.features.threads import extraction_threads
from hmf.resources import extract_mem_mb, segment_mem_mb
from hmf.settings import result_params

# A slide's feature files and extraction stats ({slide} wildcard), as hmf.features.io lays them out.
SLIDE_FEATURES = feature_paths(FEATURES_DIR, "{slide}")
# Where the batches of segmentation and of extraction are kept (hmf.batches).
SEGMENT_BATCHES = batch_folder(f"{R}/patches")
FEATURE_BATCHES = batch_folder(FEATURES_DIR)


def slide_path(wildcards):
    return _PATHS[wildcards.slide]


def slide_mpp(wildcards):
    """Per-slide µm per pixel from the sample sheet, or None to read it from the slide."""
    return _MPP.get(wildcards.slide)


def segment_job_mem_mb(slides, paths):
    """Memory of a segmentation job, from the size of its largest slide (hmf.resources; a batch
    segments its slides one after another). A dry run leaves it to be estimated when the job
    runs (shown as <TBD>) rather than open every slide of the cohort while planning."""
    if workflow.dryrun:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), paths[0])
    return max(segment_mem_mb(path, config["preprocessing"], _MPP.get(s)) for s, path in zip(slides, paths))


def get_segment_mem_mb(wildcards, input):
    return segment_job_mem_mb([wildcards.slide], [input.slide])


def get_extraction_threads(wildcards, input):
    """Threads of an extraction job, from its patch count (hmf.features.threads): every core
    for a large slide, one for a tiny one. Without --cores (a cluster executor) the cap is
    --max-threads, else this host's cores."""
    try:
        cores = workflow.cores
    except WorkflowError:
        cores = workflow.resource_settings.max_threads
    return extraction_threads(input.coords, cores)


def get_extraction_mem_mb(wildcards, input):
    """Memory of an extraction job (one slide, or a batch of them), from the patch counts of
    its slides (hmf.resources)."""
    coords = input.coords
    return extract_mem_mb([coords] if isinstance(coords, str) else coords)


def step_batches(section, folder, rule_name):
    """(rule name, log name, slides) of each job of several slides of a per-slide
    step (config section `section`, batch folder `folder`): the batches of earlier runs'
    manifests, then the slides that no job did yet, cut into batches of
    `section`.slides_per_job (hmf.batches); the training slides, then the new slides of
    predict.sample_sheet. Slides in no batch go to the step's one-slide rule."""
    size = config[section]["slides_per_job"]
    manifests, singles = read_manifests(folder), read_singles(folder)
    batches = []
    for prefix, slides in (("", SLIDE_IDS), ("predict_", PREDICT_SLIDE_IDS)):
        for batch in plan_batches(slides, size, manifests, singles):
            name = f"batch_{batch_id(batch)}"
            batches.append((f"{prefix}{rule_name}_{name}", prefix + name, batch))
    return batches


def get_segment_batch_mem_mb(slides):
    return lambda wildcards, input: segment_job_mem_mb(slides, input.slides)


def profile_entry_of_extract_features(name):
    """Give the extraction batch rule ``name`` the threads and resources that the profile
    (set-threads, set-resources) or the command line gives extract_features, as Snakemake
    does for the rule it names; an entry naming the batch rule itself wins."""
    settings = workflow.resource_settings
    batch_rule = workflow.get_rule(name)
    threads = settings._parsed_overwrite_threads.get("extract_features")
    if threads is not None and name not in settings._parsed_overwrite_threads:
        batch_rule.resources["_cores"] = threads
    if name not in settings._parsed_overwrite_resources:
        batch_rule.resources.update(settings._parsed_overwrite_resources.get("extract_features", {}))


# GPUs an extraction job asks Snakemake for: one unless features.device is cpu (with none, the
# job's device auto is the CPU). A number, not a function: Snakemake inspects a resource
# function's signature for every job it plans.
FEATURE_GPUS = int(wants_gpu(config["features"]["device"]))


def for_each_slide(pattern):
    """An input function: `pattern` (with a {slide} wildcard) for every slide of the sample
    sheet. A function rather than the list itself, so that the report shows the input as one
    entry, not one per slide."""

    def files(wildcards):
        return expand(pattern, slide=SLIDE_IDS)

    return files
