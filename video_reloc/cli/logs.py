"""Quiet logs for the binaries: warnings, errors and our own progress, not libraries' INFO.

TensorFlow's C++ INFO lines (`cudart_stub`, `cpu_feature_guard`, the oneDNN notice, ...) are
printed when TensorFlow is imported, and TensorFlow Datasets, TensorFlow and Keras log many INFO
lines through absl and `tensorflow`'s Python loggers. `quiet_by_default`, which every binary runs
before anything imports TensorFlow (`import video_reloc.cli.startup`),

- keeps `TF_CPP_MIN_LOG_LEVEL` if it is set already, else sets it to 1 (warnings and errors),
  or to the level that `--verbosity`/`-v` asks for (0 for INFO or more, 1 for -1, 2 for -2);
- imports TensorFlow with its C++ lines below that level dropped: TensorFlow 2.21 logs some
  of them (`cudart_stub`) through absl's C++ logging before it is initialized, which ignores
  `TF_CPP_MIN_LOG_LEVEL` (an error such as CUDA's `failed call to cuInit` on a machine
  without a GPU is kept: it is an error);
- keeps every Python warning and error, and every INFO line of this project's packages
  (training progress, validation, the export, the server's loading and warm-up), while other
  packages' INFO lines are dropped unless `--verbosity`/`-v` is given (then absl's level
  decides alone).

Dataset building progress still shows: TensorFlow Datasets prints "Downloading and preparing
dataset ..." and its progress bars to the terminal, not to the log.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, MutableMapping, Sequence

OWN_PACKAGES = ("video_reloc", "tfds_activitynet_reloc")
"""Packages whose INFO lines (our progress output) always show."""
QUIET_TF_CPP_MIN_LOG_LEVEL = "1"
"""TensorFlow's C++ log level by default: warnings and errors (0 is INFO, 2 errors only)."""


def verbosity_from_argv(argv: Sequence[str]) -> int | None:
    """The value of absl's `--verbosity`/`-v` in `argv` (the last one given), else `None`.

    Reads `--verbosity=N`, `--verbosity N`, `-v=N`, `-v N`, `--v=N` and `-verbosity=N` before
    the flags are parsed, so that it can decide TensorFlow's C++ log level before its import.
    """
    verbosity = None
    arguments = list(argv[1:])
    for index, argument in enumerate(arguments):
        if argument == "--":
            break
        if not argument.startswith("-"):
            continue
        name, has_value, value = argument.lstrip("-").partition("=")
        if name not in ("v", "verbosity"):
            continue
        if not has_value:
            value = arguments[index + 1] if index + 1 < len(arguments) else ""
        try:
            verbosity = int(value)
        except ValueError:
            continue  # absl reports the bad value when it parses the flags
    return verbosity


def tf_cpp_min_log_level(verbosity: int | None) -> str:
    """TensorFlow's C++ level for an absl verbosity (1 debug, 0 info, -1 warning, -2 error)."""
    if verbosity is None:
        return QUIET_TF_CPP_MIN_LOG_LEVEL
    return str(min(max(-verbosity, 0), 3))


_NATIVE_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ [^\s:]+:\d+\] ")
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written"


def filter_native_log(text: str, min_level: int) -> str:
    """Drops TensorFlow's C++ log lines below `min_level` (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL).

    A message's continuation lines follow it; absl's "All log messages before
    absl::InitializeLog() ..." banner goes when `min_level` is above 0; other lines stay.
    """
    kept, keeping = [], True
    for line in text.splitlines(keepends=True):
        match = _NATIVE_LINE.match(line)
        if match:
            keeping = "IWEF".index(match.group(1)) >= min_level
        elif line.startswith(_ABSL_BANNER):
            if min_level > 0:
                continue
            keeping = True
        if keeping:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def native_stderr_filtered(min_level: int) -> Iterator[None]:
    """Captures file descriptor 2 (C++ logs write there) and writes it back filtered.

    Python's own `sys.stderr` output in the meantime goes the same way, in order.
    """
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


@functools.cache
def _own_folders() -> tuple[str, ...]:
    """The folders of `OWN_PACKAGES`, found without importing them (that imports TensorFlow)."""
    folders = []
    for name in OWN_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            folders.extend(os.path.realpath(p) for p in spec.submodule_search_locations)
    return tuple(folder.rstrip(os.sep) + os.sep for folder in folders)


@functools.lru_cache(maxsize=4096)
def is_own_file(pathname: str) -> bool:
    """Whether a log record's source file is in one of `OWN_PACKAGES`."""
    return os.path.realpath(pathname).startswith(_own_folders())


def _verbosity_flag_given() -> bool:
    """Whether absl's flags are parsed and `--verbosity`/`-v` was given (on the command line or
    in a flag file)."""
    from absl import flags  # absl, not TensorFlow: cheap

    try:
        return flags.FLAGS.is_parsed() and bool(flags.FLAGS["verbosity"].present)
    except KeyError:
        return False


class LibraryInfoFilter(logging.Filter):
    """Drops INFO (and DEBUG) records of other packages; keeps warnings, errors and ours.

    Args:
        verbose: Keep everything (the level alone decides): `--verbosity` was given.
    """

    def __init__(self, verbose: bool = False):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or self.verbose:
            return True
        if is_own_file(record.pathname):
            return True
        return _verbosity_flag_given()


_installed: LibraryInfoFilter | None = None


def set_tf_cpp_min_log_level(
    argv: Sequence[str], environ: MutableMapping[str, str] | None = None
) -> int:
    """Sets `TF_CPP_MIN_LOG_LEVEL` unless it is set (see above); returns the level in force."""
    environ = os.environ if environ is None else environ
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_cpp_min_log_level(verbosity_from_argv(argv)))
    try:
        return int(environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        return 0  # TensorFlow reads an unparsable level as 0


def quiet_by_default(argv: Sequence[str] | None = None) -> LibraryInfoFilter:
    """Sets TensorFlow's C++ log level, imports it, filters libraries' INFO lines (see above).

    Call it before TensorFlow is imported: TensorFlow reads `TF_CPP_MIN_LOG_LEVEL` once. Calling
    it again changes nothing.

    Args:
        argv: The command line; `None`: `sys.argv`.

    Returns:
        The filter, installed on absl's handler and on the `tensorflow` logger.
    """
    global _installed
    argv = sys.argv if argv is None else argv
    min_level = set_tf_cpp_min_log_level(argv)
    if "tensorflow" not in sys.modules:
        with native_stderr_filtered(min_level) if min_level > 0 else contextlib.nullcontext():
            import tensorflow  # noqa: F401
    if _installed is None:
        from absl import logging as absl_logging

        _installed = LibraryInfoFilter(verbose=verbosity_from_argv(argv) is not None)
        # absl's handler prints every record that reaches the root logger (absl.logging's,
        # TensorFlow Datasets' and Keras's among them) once `app.run` installs it; TensorFlow's
        # own logger also prints through a handler of its own.
        absl_logging.get_absl_handler().addFilter(_installed)
        logging.getLogger("tensorflow").addFilter(_installed)
    return _installed


__all__ = [
    "LibraryInfoFilter",
    "filter_native_log",
    "is_own_file",
    "native_stderr_filtered",
    "quiet_by_default",
    "set_tf_cpp_min_log_level",
    "tf_cpp_min_log_level",
    "verbosity_from_argv",
]
