"""Network helpers for tests that start servers or workers on 127.0.0.1."""

import concurrent.futures
import json
import socket
import time
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


def stalled_connections(host: str, port: int, count: int, path: str) -> list[socket.socket]:
    """`count` connections that send half a request and stall (the caller closes them).

    Every other one stops halfway through its headers; the others send the headers with a
    Content-Length and half of that body.
    """
    body_length = 200_000
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {body_length}\r\n\r\n"
    ).encode()
    sockets = []
    for index in range(count):
        sock = socket.create_connection((host, port), timeout=30)
        sockets.append(sock)
        if index % 2:
            sock.sendall(head + b"[" * (body_length // 2))
        else:
            sock.sendall(head[: len(head) // 2])
    return sockets


def concurrent_requests(
    url: str, bodies: list[str], clients: int, timeout: float = 120.0
) -> list[tuple[int, float]]:
    """POSTs `bodies` from `clients` threads, each taking the next body in turn.

    Returns:
        (HTTP status, seconds) of each body, in order; status 0 for a request that failed
        without an HTTP answer (refused, reset, timed out).
    """

    def post(body: str) -> tuple[int, float]:
        start = time.perf_counter()
        try:
            status, _ = request(url, body, timeout=timeout)
        except (OSError, ValueError):
            status = 0
        return status, time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(post, bodies))
