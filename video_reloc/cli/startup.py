"""What TensorFlow's start-up needs from a binary, done before TensorFlow is imported.

Importing this module (every binary does, through `video_reloc/cli/__init__.py`; benchmark
scripts import it first)

- asks TensorFlow for its BFC allocator for CPU tensors, unless `TF_CPU_ALLOCATOR_USE_BFC` is
  set already (`use_bfc_cpu_allocator_by_default`);
- sets `TF_CPP_MIN_LOG_LEVEL` to 1 (warnings and errors of TensorFlow's C++ side), unless it
  is set already (0 shows TensorFlow's C++ INFO lines too), and imports TensorFlow (and lists
  its devices) with the C++ lines below that level dropped from standard error
  (`import_tensorflow_quietly`).

TensorFlow reads both variables once, when it starts: they cannot be flags.

Why the C++ lines are filtered by hand: TensorFlow 2.21 logs a few lines at import
(`port.cc`'s oneDNN notice, `cudart_stub.cc`'s "Could not find cuda drivers", CUDA's "failed
call to cuInit") through absl's C++ logging before `absl::InitializeLog()` is called, and absl
then writes every message to standard error whatever its severity, after a "WARNING: All log
messages before absl::InitializeLog() is called are written to STDERR" banner, so
`TF_CPP_MIN_LOG_LEVEL` does not silence them (abseil/abseil-cpp#1718 and #1957, "Don't log
unwanted when not initialized", not merged; tensorflow/tensorflow#102212). Python's log lines
are absl's business (`video_reloc.cli.runner`: `--verbosity`, `--logger_levels`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, MutableMapping

CPU_ALLOCATOR_ENV = "TF_CPU_ALLOCATOR_USE_BFC"
LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LOG_LEVEL = "1"
"""TensorFlow's C++ log level by default: warnings and errors (0 is INFO, 2 errors only)."""


def use_bfc_cpu_allocator_by_default(environ: MutableMapping[str, str] = os.environ) -> None:
    """Asks TensorFlow for its BFC allocator for CPU tensors, unless the environment says.

    TensorFlow's default CPU allocator takes each tensor from `malloc` and returns it on free,
    so the megabyte-sized tensors of every training step (the matching loop's per-step
    gradients, ~1 MB each) come back as fresh pages from the kernel: about 20,000 page faults
    a second. The BFC allocator keeps the freed memory in pools of its own (growing as
    needed, up to TensorFlow's default of 64 GB): a tenth of the page faults, and about 1.1
    times the training pairs/s on a 2-core CPU (3 alternated pairs of runs: 132/152/156 vs
    160/162/160). Inference latency and the unhoisted yardstick's training do not change. Set
    `TF_CPU_ALLOCATOR_USE_BFC=false` to keep TensorFlow's default.
    """
    environ.setdefault(CPU_ALLOCATOR_ENV, "true")


_NATIVE_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ [^\s:]+:\d+\] ")
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written"


_NO_CUDA_DRIVER = "Could not find cuda drivers"
_CUINIT_FAILED = "failed call to cuInit"


def filter_native_log(text: str, min_level: int) -> str:
    """Drops TensorFlow's C++ log lines below `min_level` (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL).

    A message's continuation lines follow it; absl's banner goes when `min_level` is above 0;
    other lines stay. On a machine without CUDA drivers (TensorFlow says so at INFO level), the
    error that CUDA could not be initialized is the same news and goes with it.
    """
    no_driver = _NO_CUDA_DRIVER in text
    kept, keeping = [], True
    for line in text.splitlines(keepends=True):
        match = _NATIVE_LINE.match(line)
        if match:
            keeping = "IWEF".index(match.group(1)) >= min_level
            if no_driver and _CUINIT_FAILED in line:
                keeping = min_level == 0
        elif line.startswith(_ABSL_BANNER):
            if min_level > 0:
                continue
            keeping = True
        if keeping:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def _native_stderr_filtered(min_level: int) -> Iterator[None]:
    """Captures file descriptor 2 (C++ logs write there) and writes it back filtered."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):
        yield  # no real stderr to capture
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = filter_native_log(captured.read().decode("utf-8", "replace"), min_level)
            if text:
                os.write(2, text.encode("utf-8"))


def import_tensorflow_quietly(environ: MutableMapping[str, str] = os.environ) -> None:
    """Sets `TF_CPP_MIN_LOG_LEVEL` unless set, and imports TensorFlow at that level (see above)."""
    environ.setdefault(LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL)
    if "tensorflow" in sys.modules:
        return
    try:
        min_level = int(environ[LOG_LEVEL_ENV])
    except ValueError:
        min_level = 0  # TensorFlow reads an unparsable level as 0
    with _native_stderr_filtered(min_level) if min_level > 0 else contextlib.nullcontext():
        import tensorflow

        tensorflow.config.list_physical_devices()  # CUDA's initialization logs too


use_bfc_cpu_allocator_by_default()
import_tensorflow_quietly()
