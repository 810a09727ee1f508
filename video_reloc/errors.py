"""`UserError`: a mistake in what the user asked for, as opposed to a bug.

The library raises it where it knows which argument, file, video or field is at fault; every
binary's runner (`video_reloc.cli.runner`) prints it as one line and exits with status 1,
without a traceback. Being a `ValueError`, it needs no special care from library callers.
"""

from __future__ import annotations


class UserError(ValueError):
    """A flag, file, video or field that cannot be used as given.

    Args:
        message: What is wrong, in a few words (the value, and what was expected).
        field: The argument at fault; the binaries name it as the flag of the same name
            (`--top_k`) when there is one.

    Attributes:
        message: As given.
        field: As given.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field
