"""How every binary runs: its `--help`, its log levels, and one line for a user's mistake.

A binary is a module of this package that defines its flags and a `main(argv)` calling one
library function; its `run()` (the console script's entry point) is `runner.run(main, __name__)`,
which

- makes `--help` show the binary's docstring (its purpose and examples) and its own flags.
  absl's `--help` prints the docstring of `__main__` and the key flags of the module named by
  `sys.argv[0]`, but a console script's `__main__` is a stub that only imports the binary's
  module and calls `run()` (abseil/abseil-py#320), so its docstring and key flags are adopted
  here, as `flags.adopt_module_key_flags` adopts a module's for the module that calls it;
- shows this package's INFO log lines (training progress, validation, the export, the
  server's versions) and other libraries' from WARNING on: absl's `--logger_levels` defaults
  to `video_reloc:INFO`, and the other loggers keep absl's default verbosity, WARNING, unless
  `--verbosity` is given (`app.run` would raise it to INFO: TensorFlow's and TFDS's INFO
  lines are many);
- prints a flag error, an `absl.app.UsageError` of the binary, or a
  `video_reloc.errors.UserError` of the library as one line that names the flag, file, video
  or field at fault, and exits with status 1; the traceback shows with `--verbosity=1` or more.
"""

from __future__ import annotations

import functools
import sys
import traceback
import types
from collections.abc import Callable

from absl import app, flags
from absl import logging as absl_logging

from video_reloc.errors import UserError

FLAGS = flags.FLAGS
LOGGER_LEVELS = "video_reloc:INFO,tfds_activitynet_reloc:INFO"
"""absl's `--logger_levels` by default: our progress lines show."""
USER_ERROR_EXIT_CODE = 1


def run(main: Callable[[list[str]], object], module_name: str) -> None:
    """Parses the flags and runs `main(argv)`, failing in one line on a user's mistake.

    Args:
        main: The binary's function of the arguments left after the flags (the program name
            only, unless the user gave positional arguments: the flags are parsed).
        module_name: The binary's module (`__name__`), whose docstring and flags `--help` shows.
    """
    _adopt_for_help(sys.modules[module_name])
    FLAGS.set_default("logger_levels", LOGGER_LEVELS)
    app.run(functools.partial(_main, main), flags_parser=_parse_flags)


def _adopt_for_help(module: types.ModuleType) -> None:
    """Makes the module `__main__` and `sys.argv[0]` stand for show `module`'s help."""
    main_module = sys.modules["__main__"]
    if main_module is module:
        return  # `python -m video_reloc.cli.NAME`: absl finds it by itself
    main_module.__doc__ = module.__doc__
    for flag in FLAGS.get_key_flags_for_module(module.__name__):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as error:  # absl puts one missing required flag a line
        _fail("; ".join(str(error).splitlines()) + " (--help lists the flags)")


def _main(main: Callable[[list[str]], object], argv: list[str]) -> None:
    if not FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments {argv[1:]}; every input is a flag")
        main(argv)
    except (UserError, app.UsageError) as error:
        if FLAGS.verbosity >= 1:
            traceback.print_exc()
        _fail(describe(error) if isinstance(error, UserError) else str(error))


def describe(error: UserError) -> str:
    """The error's line: `--FLAG: message` when its field is a flag of the binary."""
    if error.field is None:
        return error.message
    name = f"--{error.field}" if error.field in FLAGS else error.field
    return f"{name}: {error.message}"


def _fail(line: str) -> None:
    program = sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "video-reloc"
    print(f"{program}: {line}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT_CODE)
