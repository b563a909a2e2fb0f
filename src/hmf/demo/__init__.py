"""The embedded demo cohort: slides and label files generated from a seed and real H&E.

- :mod:`hmf.demo.plan` — the cohort plan (labels, um/px, tumour geometry); cheap, no pixels,
  usable while the workflow parses (``plan_cohort``, ``planned_sample_sheet``).
- :mod:`hmf.demo.geometry` — smooth random blob outlines and their largest dimension.
- :mod:`hmf.demo.tissue` — rendering from the real Aperio slide and carcinoma image.
- :mod:`hmf.demo.writer` — pyramidal tiled JPEG TIFFs for OpenSlide (``write_slide``).
- :mod:`hmf.demo.labels` — CAMELYON17 ``stage_labels.csv`` or a TCGA ``patient_id,label`` CSV.

This module imports nothing itself, so importing the plan stays light.
"""
