"""TFDS builder of the video re-localization dataset (Feng et al., ECCV 2018, Sec. 4).

`reorganize` (the function; its module is `tfds_activitynet_reloc.reorganize`, import
names from it with `from tfds_activitynet_reloc.reorganize import ...`) applies the
dataset rules of the original release, in pure Python + numpy: importing this package
imports no TensorFlow. The TFDS builder is in `tfds_activitynet_reloc/activitynet_reloc/`
(`tfds build tfds_activitynet_reloc/activitynet_reloc`); importing its module
`tfds_activitynet_reloc.activitynet_reloc.activitynet_reloc_dataset_builder` registers the
`activitynet_reloc` dataset with TFDS.
"""

from tfds_activitynet_reloc.reorganize import RELEASE_PERM, draw_pairs, reorganize

__all__ = ["RELEASE_PERM", "draw_pairs", "reorganize"]
