"""mmseg_heads: multi-task, multi-modality segmentation with one fusion trunk and a head per task."""

__version__ = "0.1.0"
