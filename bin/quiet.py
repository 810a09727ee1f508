"""Imported first by every binary, before TensorFlow: quiet logs by default (see `logs`)."""

from video_reloc_bin import logs

logs.quiet_by_default()
