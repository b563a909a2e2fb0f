"""HMF: hierarchical multimodal fusion of whole-slide images and text, from slides to tables."""

__version__ = "0.1.0"
