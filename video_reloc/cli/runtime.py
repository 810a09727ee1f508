"""TensorFlow runtime settings the binaries make before TensorFlow starts.

TensorFlow reads them from the environment once, when it creates its CPU allocator, so they
are set (unless the environment already has them) by `video_reloc.cli.startup`, which every
binary imports first.
"""

from __future__ import annotations

import os

CPU_ALLOCATOR_ENV = "TF_CPU_ALLOCATOR_USE_BFC"


def use_bfc_cpu_allocator_by_default() -> None:
    """Asks TensorFlow for its BFC allocator for CPU tensors, unless the environment says.

    TensorFlow's default CPU allocator takes each tensor from `malloc` and returns it on free,
    so the megabyte-sized tensors of every training step (the matching loop's per-step
    gradients, ~1 MB each) come back as fresh pages from the kernel: about 20,000 page faults
    a second. The BFC allocator keeps the freed memory in pools of its own (growing as
    needed, up to TensorFlow's default of 64 GB): a tenth of the page faults, and about 1.1
    times the training pairs/s on a 2-core CPU (3 alternated pairs of runs: 132/152/156 vs
    160/162/160). Inference latency and the unhoisted yardstick's training do not change.
    Set `TF_CPU_ALLOCATOR_USE_BFC=false` to keep TensorFlow's default.
    """
    os.environ.setdefault(CPU_ALLOCATOR_ENV, "true")
