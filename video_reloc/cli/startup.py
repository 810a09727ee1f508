"""Imported first by every binary, before TensorFlow starts.

- the BFC allocator for CPU tensors unless the environment says otherwise (see `runtime`);
- quiet logs by default (see `logs`); this imports TensorFlow.
"""

from video_reloc.cli import logs, runtime

runtime.use_bfc_cpu_allocator_by_default()
logs.quiet_by_default()
