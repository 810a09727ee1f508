"""video-reloc: Video Re-localization (Feng, Ma, Liu, Zhang, Luo, ECCV 2018) in TF2 / Keras 3."""

from video_reloc import layers
from video_reloc.model import ABLATIONS, VideoRelocModel, build_model

__version__ = "0.1.0"

__all__ = ["ABLATIONS", "VideoRelocModel", "build_model", "layers", "__version__"]
