# Slides to features, CLAM-compatible: tissue segmentation, patch coordinates, patch features,
# and a QC table across slides. Parameters come from the `preprocessing:` and `features:`
# config sections (config/schema/{preprocessing,features}.schema.yaml).


rule segment:
    """Tissue contours (GeoJSON, level-0 px), the QC mask picture and segmentation stats of one slide."""
    input:
        slide=slide_path,
    output:
        geojson=f"{R}/contours/{{slide}}.geojson",
        mask=report(
            f"{R}/masks/{{slide}}.jpg",
            caption="../workflow/report/mask.rst",
            category="Quality control",
            subcategory="Tissue masks",
            labels={"slide": "{slide}"},
        ),
        stats=f"{R}/segmentation/{{slide}}.json",
    params:
        preprocessing=config["preprocessing"],
        mpp=slide_mpp,
    log:
        f"{LOGS}/segment/{{slide}}.log",
    benchmark:
        f"{BENCH}/segment/{{slide}}.tsv"
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/segment.py"


rule patch:
    """Patch coordinates (CLAM h5; zero rows for a slide without tissue) and the stitch picture."""
    input:
        slide=slide_path,
        geojson=f"{R}/contours/{{slide}}.geojson",
    output:
        coords=f"{R}/patches/{{slide}}.h5",
        stitch=report(
            f"{R}/stitches/{{slide}}.jpg",
            caption="../workflow/report/stitch.rst",
            category="Quality control",
            subcategory="Patch stitches",
            labels={"slide": "{slide}"},
        ),
    params:
        preprocessing=config["preprocessing"],
        mpp=slide_mpp,
    log:
        f"{LOGS}/patch/{{slide}}.log",
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/patch.py"


SLIDES_PER_JOB = config["features"]["slides_per_job"]

if SLIDES_PER_JOB == 1:

    rule extract_features:
        """Patch features of one slide (CLAM h5_files/ and pt_files/ layouts) and extraction stats."""
        input:
            slide=slide_path,
            coords=f"{R}/patches/{{slide}}.h5",
        output:
            h5=f"{FEATURES_DIR}/h5_files/{{slide}}.h5",
            pt=f"{FEATURES_DIR}/pt_files/{{slide}}.pt",
            stats=f"{FEATURES_DIR}/stats/{{slide}}.json",
        params:
            features=config["features"],
            mpp=slide_mpp,
        # Cores shared out among the slides: many one-thread jobs keep every core busy and
        # overlap each job's start-up; a few large slides get several threads each.
        threads: lambda wc: max(1, workflow.cores // max(1, len(SLIDE_IDS)))
        resources:
            gpu=lambda wc: int(str(config["features"]["device"]).startswith(("cuda", "gpu"))),
            mem_mb=4000,
        log:
            f"{LOGS}/extract_features/{{slide}}.log",
        benchmark:
            f"{BENCH}/extract_features/{{slide}}.tsv"
        conda:
            "../envs/hmf.yaml"
        script:
            "../workflow/scripts/extract_features.py"

else:
    # Several slides per job: one rule per batch of slides (the batches are fixed when the
    # workflow is read), each writing the same per-slide files as the rule above.
    for _index, _batch in enumerate(
        [SLIDE_IDS[i : i + SLIDES_PER_JOB] for i in range(0, len(SLIDE_IDS), SLIDES_PER_JOB)]
    ):

        rule:
            name:
                f"extract_features_batch{_index}"
            input:
                slides=[_PATHS[s] for s in _batch],
                coords=[f"{R}/patches/{s}.h5" for s in _batch],
            output:
                h5=[f"{FEATURES_DIR}/h5_files/{s}.h5" for s in _batch],
                pt=[f"{FEATURES_DIR}/pt_files/{s}.pt" for s in _batch],
                stats=[f"{FEATURES_DIR}/stats/{s}.json" for s in _batch],
            params:
                features=config["features"],
                slides=_batch,
                mpp=[_MPP[s] for s in _batch],
            threads: 1
            resources:
                gpu=lambda wc: int(str(config["features"]["device"]).startswith(("cuda", "gpu"))),
                mem_mb=4000,
            log:
                f"{LOGS}/extract_features/batch{_index}.log",
            benchmark:
                f"{BENCH}/extract_features/batch{_index}.tsv"
            conda:
                "../envs/hmf.yaml"
            script:
                "../workflow/scripts/extract_features_batch.py"


rule qc_summary:
    """One row per slide: tissue area, contours, patches, seconds per step, no-tissue flag."""
    input:
        segmentation=expand(f"{R}/segmentation/{{slide}}.json", slide=SLIDE_IDS),
        coords=expand(f"{R}/patches/{{slide}}.h5", slide=SLIDE_IDS),
        extraction=expand(f"{FEATURES_DIR}/stats/{{slide}}.json", slide=SLIDE_IDS),
    output:
        report(
            f"{R}/qc/summary.csv",
            caption="../workflow/report/qc_summary.rst",
            category="Quality control",
            subcategory="Summary",
            labels={"table": "QC summary"},
        ),
    params:
        slides=SLIDE_IDS,
    log:
        f"{LOGS}/qc_summary.log",
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/qc_summary.py"
