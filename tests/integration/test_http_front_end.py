"""modelyard's own HTTP/1.1 front end, over raw sockets: the parts clients rely on."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.testing import RunningServer, running_server

BODY = json.dumps(
    {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": [2.0] * 16},
        ]
    }
).encode()


def _connect(server: RunningServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.settimeout(10)
    return sock


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[bytes, dict[str, str], bytes]:
    """One response off the stream (Content-Length framed); leftovers stay in ``buf``."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {
        k.decode().lower(): v.decode().strip()
        for k, v in (line.split(b":", 1) for line in lines[1:])
    }
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    buf[:] = rest[length:]
    return lines[0], headers, rest[:length]


def _infer(path: str = "/v2/models/add_sub/infer", extra: bytes = b"") -> bytes:
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\nContent-Length: "
        + str(len(BODY)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + BODY
    )


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    with _connect(server) as sock:
        sock.sendall(
            _infer()
            + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
            + _infer("/v2/models/nope/infer")
        )
        buf = bytearray()
        statuses = [_read_response(sock, buf)[0] for _ in range(3)]
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"]


def test_body_split_across_packets_and_chunked_encoding(server: RunningServer) -> None:
    with _connect(server) as sock:
        request = _infer()
        for i in range(0, len(request), 7):  # dribble it in
            sock.sendall(request[i : i + 7])
        buf = bytearray()
        status, _, body = _read_response(sock, buf)
        assert status == b"HTTP/1.1 200 OK"
        assert json.loads(body)["outputs"][0]["data"] == [3.0] * 16
        chunked = (
            b"".join(
                b"%x\r\n%s\r\n" % (len(BODY[i : i + 50]), BODY[i : i + 50])
                for i in range(0, len(BODY), 50)
            )
            + b"0\r\n\r\n"
        )
        sock.sendall(
            b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunked
        )
        status, _, body = _read_response(sock, buf)
        assert status == b"HTTP/1.1 200 OK", body
        assert json.loads(body)["outputs"][1]["data"] == [-1.0] * 16


def test_expect_100_continue(server: RunningServer) -> None:
    with _connect(server) as sock:
        head = _infer(extra=b"Expect: 100-continue\r\n")
        sock.sendall(head[: -len(BODY)])
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(1024)
        assert bytes(buf).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        del buf[: len(b"HTTP/1.1 100 Continue\r\n\r\n")]
        sock.sendall(BODY)
        assert _read_response(sock, buf)[0] == b"HTTP/1.1 200 OK"


def test_http10_and_connection_close(server: RunningServer) -> None:
    for request in (
        b"GET /v2/health/live HTTP/1.0\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        with _connect(server) as sock:
            sock.sendall(request)
            buf = bytearray()
            _, headers, _ = _read_response(sock, buf)
            assert headers["connection"] == "close"
            assert sock.recv(10) == b""  # the server closed its side


def test_head_has_headers_but_no_body(server: RunningServer) -> None:
    r = httpx.head(f"{server.base_url}/v2/models/add_sub")
    assert r.status_code == 200
    assert int(r.headers["content-length"]) > 0
    assert r.content == b""


def test_declared_oversize_body_is_refused_before_it_arrives(server: RunningServer) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 999999999\r\n\r\n" + b"x" * 1000
        )
        buf = bytearray()
        status, headers, body = _read_response(sock, buf)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert headers["connection"] == "close"
    assert "exceeds the maximum allowed value of 1048576 bytes" in json.loads(body)["error"]


def test_malformed_http_gets_400_and_the_server_carries_on(server: RunningServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        buf = bytearray()
        status, _, body = _read_response(sock, buf)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert b"malformed HTTP request" in body
    assert httpx.get(f"{server.base_url}/v2/health/live").status_code == 200


def test_a_large_body_sent_after_100_continue(server: RunningServer) -> None:
    """What curl does for a large body: headers with ``Expect: 100-continue``, then the body
    only once the server has asked for it (curl would otherwise wait a second)."""
    body = json.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "shape": [8, 16], "datatype": "FP32", "data": [0.5] * 128},
                {"name": "INPUT1", "shape": [8, 16], "datatype": "FP32", "data": [0.25] * 128},
            ],
            "pad": "x" * 600_000,
        }
    ).encode()
    with _connect(server) as sock:
        sock.sendall(
            b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
            b"Expect: 100-continue\r\n\r\n" % len(body)
        )
        buf = bytearray()
        while b"\r\n\r\n" not in buf:  # nothing of the body is sent before this
            buf += sock.recv(1024)
        assert bytes(buf).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        del buf[: len(b"HTTP/1.1 100 Continue\r\n\r\n")]
        sock.sendall(body)
        status, _, answer = _read_response(sock, buf)
    assert status == b"HTTP/1.1 200 OK", answer[:300]
    assert json.loads(answer)["outputs"][0]["shape"] == [8, 16]


@pytest.fixture(scope="module")
def uvicorn_server(repository: Path) -> Iterator[RunningServer]:
    with running_server(repository, ["--http-server", "uvicorn"]) as s:
        yield s


def test_same_answers_under_uvicorn(uvicorn_server: RunningServer) -> None:
    """The application is an ASGI app too: `--http-server uvicorn` serves the same API."""
    with httpx.Client(base_url=uvicorn_server.base_url) as http:
        r = http.post("/v2/models/add_sub/infer", content=BODY)
        assert r.status_code == 200
        assert r.json()["outputs"][0]["data"] == [3.0] * 16
        r = http.post("/v2/models/nope/infer", content=BODY)
        assert (r.status_code, r.json()) == (
            404,
            {"error": "Request for unknown model: 'nope' is not found"},
        )
        assert http.get("/v2/models/add_sub/ready").status_code == 200
