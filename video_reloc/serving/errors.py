"""The error a refused request raises: a canonical error code and a message naming the field."""

from __future__ import annotations

# The canonical codes this server answers with, and their HTTP statuses on the REST API.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,  # a body over --max_request_bytes
    "UNAVAILABLE": 503,  # a full queue, a server shutting down
    "DEADLINE_EXCEEDED": 503,  # the model did not answer within --rest_api_timeout_in_ms
    "INTERNAL": 500,
}


class ServingError(Exception):
    """A request the server refuses, with the canonical (gRPC) code of TensorFlow Serving.

    Args:
        message: What is wrong, starting with the field at fault (`instances[0].query: ...`).
        code: `INVALID_ARGUMENT` (HTTP 400), `NOT_FOUND` (404), `RESOURCE_EXHAUSTED` (413),
            `UNAVAILABLE` or `DEADLINE_EXCEEDED` (503), or `INTERNAL` (500).
    """

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT"):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown error code {code!r}; known: {sorted(HTTP_STATUS)}")
        super().__init__(message)
        self.code = code

    @property
    def status(self) -> int:
        """The HTTP status of the REST API."""
        return HTTP_STATUS[self.code]
