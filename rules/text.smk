# Class descriptions per label set (shipped bank or LLM) and their embeddings per text encoder.
#
# The prompts file is a cache: its output is marked update() so Snakemake does not delete it
# before the job runs, and the job keeps it when its provenance matches the params below
# (source, model, template sha256, classes). Changing one of them shows up as a params change
# in `snakemake -n` and regenerates the file; otherwise hand edits are kept. The params hold
# the text settings a job reads that change its output (hmf.settings.result_params); the job
# takes the run-time ones (device, batch size, downloads, the LLM's endpoint, key variable,
# time-outs and retries) from the config (hmf.settings.job_section).

import re

from snakemake.exceptions import WorkflowError

from hmf.devices import wants_gpu
from hmf.settings import result_params
from hmf.text.prompts import cache_key, labelset_classes
from hmf.text.settings import encoding_params, prompts_params, text_settings

try:
    TEXT = text_settings(config.get("text"))
    TEXT_LABELSETS = sorted(set(TASK.labelsets.values()))
    PROMPT_KEYS = {ls: cache_key(ls, labelset_classes(TASK, ls), TEXT) for ls in TEXT_LABELSETS}
except (ValueError, FileNotFoundError) as err:
    raise WorkflowError(f"config text: {err}") from None


rule prompts:
    """Descriptions of every class of a label set, kept while source/model/template/classes are unchanged."""
    output:
        update(f"{R}/prompts/{{labelset}}.json"),
    log:
        f"{LOGS}/prompts/{{labelset}}.log",
    wildcard_constraints:
        labelset="|".join(map(re.escape, TEXT_LABELSETS)),
    conda:
        "../envs/hmf.yaml"
    params:
        source=lambda wc: PROMPT_KEYS[wc.labelset]["source"],
        model=lambda wc: PROMPT_KEYS[wc.labelset]["model"],
        template_sha256=lambda wc: PROMPT_KEYS[wc.labelset]["template_sha256"],
        classes=lambda wc: PROMPT_KEYS[wc.labelset]["classes"],
        text=result_params("text", prompts_params(TEXT)),
    script:
        "../workflow/scripts/prompts.py"


rule encode_text:
    """Embeddings of a label set's descriptions by one frozen text encoder (computed once)."""
    input:
        prompts=f"{R}/prompts/{{labelset}}.json",
    output:
        f"{R}/text/{{labelset}}/{{text_encoder}}.pt",
    log:
        f"{LOGS}/encode_text/{{labelset}}/{{text_encoder}}.log",
    wildcard_constraints:
        labelset="|".join(map(re.escape, TEXT_LABELSETS)),
        text_encoder="|".join(map(re.escape, sorted(TEXT.encoders))),
    conda:
        "../envs/hmf.yaml"
    threads: 1
    resources:
        gpu=int(wants_gpu(TEXT.device)),  # a GPU unless text.device is cpu (claimed by the job)
    params:
        text=lambda wc: result_params("text", encoding_params(TEXT, wc.text_encoder)),
    script:
        "../workflow/scripts/encode_text.py"
