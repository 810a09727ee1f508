"""The error a refused request raises: an HTTP status and a message naming the field."""

from __future__ import annotations


class ServingError(Exception):
    """A request the server refuses: an HTTP status and a message naming the field."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
