"""A small synthetic config of the dataset builder, shared by the tests that build data."""

from tfds_activitynet_reloc.activitynet_reloc import activitynet_reloc_dataset_builder as anr
from tfds_activitynet_reloc.activitynet_reloc import synthetic

TINY_SYNTHETIC = anr.ActivitynetRelocConfig(
    name="synthetic_tiny",
    description="Small synthetic data for tests.",
    source="synthetic",
    feature_dim=synthetic.DIM,
    synthetic_num_classes=10,
    synthetic_segments_per_class=3,
)
