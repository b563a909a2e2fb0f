"""Patch features: encoders (registry: resnet50_trunc, timm:<arch>), extract (one slide's
feature files), io (read_features for our files and CLAM's)."""
