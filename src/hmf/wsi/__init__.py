"""Whole-slide images to patch coordinates, CLAM-compatible.

slide (opening slides, resolution, regions; SlideError), presets (CLAM presets and config
overrides), segmentation (tissue contours), contours_io (GeoJSON), patching (patch grids and
the coordinates file), qc (mask/stitch pictures, summary table), steps (the per-slide steps
the workflow runs). Nothing here imports torch.
"""
