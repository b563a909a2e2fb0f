# Slides to features, CLAM-compatible: tissue segmentation, patch coordinates, patch features,
# and a QC table across slides. Parameters come from the `preprocessing:` and `features:`
# config sections (config/schema/{preprocessing,features}.schema.yaml).
#
# Segmentation and patching take a second or two per slide: they are one job per slide, and on a
# cluster the jobs of many slides run as one cluster job: profiles/slurm puts the rule in the
# group `preprocess` (`groups`) and sets how many slides a group job holds (`group-components`).
# The group is set there rather than here because only a cluster uses it, and a group costs a
# local run and every plan time per job. They stay one job per slide for Snakemake, so a changed
# slide redoes only its own.
#
# Batches (preprocessing.slides_per_job, features.slides_per_job above 1): one rule per batch of
# slides, writing the same per-slide files as the one-slide rule, then the batch's manifest (not
# an output, so that a finished batch without a manifest, made before them, is not rerun). A
# batch rule names its files without wildcards, so Snakemake prefers it to the one-slide rule
# for its slides. Batches are kept once made (hmf.batches), so a changed slides_per_job reruns
# nothing. They cut the jobs of a large cohort's plan (Snakemake spends milliseconds per job).


rule segment_and_patch:
    """Tissue contours (GeoJSON, level-0 px), the QC mask picture and the segmentation stats of
    one slide, then its patch coordinates (CLAM h5; zero rows for a slide without tissue) and
    the stitch picture. One job for both steps: each takes a second or two, and a plan of a
    large cohort costs Snakemake time per job."""
    input:
        slide=slide_path,
    output:
        geojson=f"{R}/contours/{{slide}}.geojson",
        # Not a report item: the report shows a bounded selection of slides (rule qc_review).
        mask=f"{R}/masks/{{slide}}.jpg",
        stats=f"{R}/segmentation/{{slide}}.json",
        coords=f"{R}/patches/{{slide}}.h5",
        stitch=f"{R}/stitches/{{slide}}.jpg",
    log:
        f"{LOGS}/segment_and_patch/{{slide}}.log",
    benchmark:
        f"{BENCH}/segment_and_patch/{{slide}}.tsv"
    conda:
        "../envs/hmf.yaml"
    resources:
        # From the slide: the size of the image segmentation reads, and its masks.
        mem_mb=get_segment_mem_mb,
    params:
        preprocessing=result_params("preprocessing", config["preprocessing"]),
        mpp=slide_mpp,
    script:
        "../workflow/scripts/segment_and_patch.py"


for _name, _log, _batch in step_batches("preprocessing", SEGMENT_BATCHES, "segment_and_patch"):

    rule:
        name:
            _name
        input:
            slides=[_PATHS[s] for s in _batch],
        output:
            geojson=[f"{R}/contours/{s}.geojson" for s in _batch],
            mask=[f"{R}/masks/{s}.jpg" for s in _batch],
            stats=[f"{R}/segmentation/{s}.json" for s in _batch],
            coords=[f"{R}/patches/{s}.h5" for s in _batch],
            stitch=[f"{R}/stitches/{s}.jpg" for s in _batch],
        log:
            f"{LOGS}/segment_and_patch/{_log}.log",
        benchmark:
            f"{BENCH}/segment_and_patch/{_log}.tsv"
        conda:
            "../envs/hmf.yaml"
        resources:
            mem_mb=get_segment_batch_mem_mb(_batch),
        params:
            preprocessing=result_params("preprocessing", config["preprocessing"]),
            slides=_batch,
            mpp=[_MPP[s] for s in _batch],
        script:
            "../workflow/scripts/segment_and_patch_batch.py"


rule extract_features:
    """Patch features of one slide (CLAM h5_files/ and pt_files/ layouts) and extraction stats."""
    input:
        slide=slide_path,
        coords=f"{R}/patches/{{slide}}.h5",
    output:
        h5=SLIDE_FEATURES.h5,
        pt=SLIDE_FEATURES.pt,
        stats=SLIDE_FEATURES.stats,
    log:
        f"{LOGS}/extract_features/{{slide}}.log",
    benchmark:
        f"{BENCH}/extract_features/{{slide}}.tsv"
    conda:
        "../envs/hmf.yaml"
    # From the slide's patch count: a large slide gets every core (and runs alone), small
    # ones one thread each, so that their start-ups overlap (hmf.features.threads).
    threads: get_extraction_threads
    resources:
        gpu=FEATURE_GPUS,
        # From the slide's patch count: the encoder plus one copy of its features.
        mem_mb=get_extraction_mem_mb,
    params:
        features=result_params("features", config["features"]),
        mpp=slide_mpp,
    script:
        "../workflow/scripts/extract_features.py"


# Extraction batches (features.slides_per_job above 1); they take the profile's extract_features entries.
for _name, _log, _batch in step_batches("features", FEATURE_BATCHES, "extract_features"):

    rule:
        name:
            _name
        input:
            slides=[_PATHS[s] for s in _batch],
            coords=[f"{R}/patches/{s}.h5" for s in _batch],
        output:
            h5=[feature_paths(FEATURES_DIR, s).h5 for s in _batch],
            pt=[feature_paths(FEATURES_DIR, s).pt for s in _batch],
            stats=[feature_paths(FEATURES_DIR, s).stats for s in _batch],
        log:
            f"{LOGS}/extract_features/{_log}.log",
        benchmark:
            f"{BENCH}/extract_features/{_log}.tsv"
        conda:
            "../envs/hmf.yaml"
        threads: get_extraction_threads
        resources:
            gpu=FEATURE_GPUS,
            mem_mb=get_extraction_mem_mb,
        params:
            features=result_params("features", config["features"]),
            slides=_batch,
            mpp=[_MPP[s] for s in _batch],
        script:
            "../workflow/scripts/extract_features_batch.py"

    profile_entry_of_extract_features(_name)


rule qc_summary:
    """One row per slide: tissue area, contours, patches, seconds per step, no-tissue flag."""
    input:
        segmentation=for_each_slide(f"{R}/segmentation/{{slide}}.json"),
        coords=for_each_slide(f"{R}/patches/{{slide}}.h5"),
        extraction=for_each_slide(SLIDE_FEATURES.stats),
    output:
        report(
            f"{R}/qc/summary.csv",
            caption="../workflow/report/qc_summary.rst",
            category="Quality control",
            subcategory="Summary",
            labels={"table": "QC summary"},
        ),
    log:
        f"{LOGS}/qc_summary.log",
    conda:
        "../envs/hmf.yaml"
    params:
        slides=SLIDE_IDS,
    script:
        "../workflow/scripts/qc_summary.py"
