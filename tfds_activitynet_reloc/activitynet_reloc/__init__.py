"""The activitynet_reloc dataset in the `tfds new` layout (builder module imported by TFDS)."""
