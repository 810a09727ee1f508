"""Network helpers for tests that start servers or workers on 127.0.0.1."""

import json
import socket
import urllib.error
import urllib.request


def free_ports(count: int = 1) -> list[int]:
    """`count` distinct ports that were free a moment ago (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def request(url: str, body: bytes | str | None = None, timeout: float = 120.0):
    """(status, decoded JSON) of a GET (no body) or POST; HTTP errors are returned, not raised."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
