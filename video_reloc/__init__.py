"""video-reloc: Video Re-localization (Feng, Ma, Liu, Zhang, Luo, ECCV 2018) in TF2 / Keras 3.

The names below load their modules when first used, so that importing a submodule (a binary of
`video_reloc.cli` first of all) does not import TensorFlow before it is ready to.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "layers": "video_reloc.layers",
    "ABLATIONS": "video_reloc.model",
    "VideoRelocModel": "video_reloc.model",
    "build_model": "video_reloc.model",
}

__all__ = ["ABLATIONS", "VideoRelocModel", "build_model", "layers", "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'video_reloc' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if name == "layers" else getattr(module, name)
