"""Patch features: settings (the ``features:`` section, typed), encoders (registry:
resnet50_trunc, timm:<arch>), engine (a slide's patches through the encoder), extract (one
slide's job), io (the feature files: paths, writer, readers for ours and CLAM's), threads (a
job's threads)."""
