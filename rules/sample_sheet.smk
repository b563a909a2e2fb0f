# The validated sample sheet that every later job reads.


rule sample_sheet:
    """The validated sample sheet every later job reads, from the user's label files."""
    input:
        labels=label_inputs(),
        # With precomputed features the slide files are not needed (and may be elsewhere).
        slides=[] if PRECOMPUTED else [_PATHS[s] for s in SLIDE_IDS],
    output:
        f"{R}/sample_sheet.csv",
    log:
        f"{LOGS}/sample_sheet.log",
    conda:
        "../envs/hmf.yaml"
    params:
        dataset=result_params("dataset", DATASET),
        task=TASK.name,
        check_files=not PRECOMPUTED,
        extra_columns=EXTRA_SHEET_COLUMNS,
    script:
        "../workflow/scripts/sample_sheet.py"
