"""wsi subpackage."""
