"""Bounded requests, over raw sockets against the real server: what one hostile client
(a huge URL or header, a slowloris, nested JSON, CONNECT) gets, and that everyone else is
served meanwhile. Every HTTP front end (``--http-server``) is held to the same limits."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.testing import RunningServer, free_port, running_server, start_server
from tests.factories.onnx_models import add_sub, write_model

FRONT_ENDS = ["modelyard", "uvicorn"]
NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits")
    write_model(root, "add_sub", add_sub(), None)
    return root


@pytest.fixture(scope="module", params=FRONT_ENDS)
def server(request: pytest.FixtureRequest, repo: Path) -> Iterator[RunningServer]:
    args = ["--http-server", request.param, "--http-header-timeout", "1"]
    with running_server(repo, args) as s:
        yield s


def _connect(server: RunningServer, timeout: float = 30) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read until the server closes (every refusal here ends with ``Connection: close``)."""
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                headers = _headers(head)
                if len(body) >= int(headers.get("content-length", "-1")) >= 0:
                    break
    except ConnectionResetError:
        pass  # the answer came first; the reset is the server dropping what we still sent
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no response, got {data[:200]!r}"
    return int(head.split(b" ", 2)[1]), _headers(head), body


def _headers(head: bytes) -> dict[str, str]:
    lines = head.split(b"\r\n")[1:]
    return {
        k.decode().strip().lower(): v.decode().strip()
        for k, v in (line.split(b":", 1) for line in lines if b":" in line)
    }


def _send_forever(sock: socket.socket, first: bytes, filler: bytes, total: int) -> None:
    """Send ``first`` then ``filler`` up to ``total`` bytes, stopping when the server stops
    reading or closes (it refuses long before the end)."""
    try:
        sock.sendall(first)
        sent = 0
        while sent < total:
            sock.sendall(filler)
            sent += len(filler)
    except OSError:
        pass


def _served_meanwhile(server: RunningServer) -> None:
    """Another client's ordinary request, answered while the hostile one is at it."""
    r = httpx.get(f"{server.base_url}/v2/health/live", timeout=30)
    assert r.status_code == 200


def _refused_while_streaming(server: RunningServer, first: bytes, filler: bytes) -> int:
    with _connect(server) as sock:
        sender = threading.Thread(
            target=_send_forever, args=(sock, first, filler, 64 << 20), daemon=True
        )
        sender.start()
        _served_meanwhile(server)
        status, headers, body = _response(sock)
        assert headers.get("connection") == "close"
        assert "error" in json.loads(body)
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=60)
    _served_meanwhile(server)
    return status


def test_huge_url_gets_414_and_others_are_served(server: RunningServer) -> None:
    assert _refused_while_streaming(server, b"GET /v2/", b"a" * 65536) == 414


def test_huge_header_gets_431_and_others_are_served(server: RunningServer) -> None:
    first = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: "
    assert _refused_while_streaming(server, first, b"a" * 65536) == 431


def test_many_headers_get_431(server: RunningServer) -> None:
    first = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
    assert _refused_while_streaming(server, first, b"X-A: b\r\n" * 8192) == 431


def test_oversize_head_in_one_packet_gets_431(server: RunningServer) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
        )
        assert _response(sock)[0] == 431


def test_heads_within_the_limits_are_served(server: RunningServer) -> None:
    """A 7 KiB query string and 50 kB of headers (a large bearer token) pass."""
    with _connect(server) as sock:
        sock.sendall(
            b"GET /v2/health/live?q="
            + b"a" * 7000
            + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
            + b"t" * 50_000
            + b"\r\n\r\n"
        )
        assert _response(sock)[0] == 200


def test_slowloris_is_disconnected_while_others_are_served(server: RunningServer) -> None:
    """A client dribbling its headers (one byte every 0.2 s) gets 408 and is closed after
    --http-header-timeout (1 s here); others are served meanwhile."""
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        deadline = time.monotonic() + 60
        closed = False
        while time.monotonic() < deadline and not closed:
            _served_meanwhile(server)
            try:
                sock.sendall(b"a")
            except OSError:
                closed = True
            time.sleep(0.2)
            sock.settimeout(0.01)
            try:
                closed = closed or bool(sock.recv(1, socket.MSG_PEEK))
            except TimeoutError:
                pass
            except OSError:
                closed = True
            sock.settimeout(30)
        assert closed, "the slow client was not disconnected"
        status, _, body = _response(sock) if not _reset(sock) else (408, {}, b"")
        assert status == 408, body


def _reset(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_PEEK)
    except ConnectionResetError:
        return True
    return False


def test_nested_json_is_400_in_every_json_route(repo: Path) -> None:
    """100k-deep ``[[[[...]]]]``: 400 with a v2 error body (was 500, RecursionError)."""
    port = free_port()
    args = ["--model-control-mode", "explicit", "--load-model", "add_sub"]
    args += ["--allow-sagemaker=true", "--sagemaker-port", str(port)]
    with running_server(repo, args) as s:
        for path, body in [
            ("/v2/models/add_sub/infer", NESTED),
            ("/v2/repository/models/add_sub/load", b'{"parameters": ' + NESTED + b"}"),
            (
                "/v2/repository/models/add_sub/load",
                json.dumps({"parameters": {"config": NESTED.decode()}}).encode(),
            ),
            ("/v2/repository/index", NESTED),
        ]:
            r = httpx.post(f"{s.base_url}{path}", content=body, timeout=60)
            assert r.status_code == 400, (path, r.text)
            assert "error" in r.json()
        sagemaker = f"http://{s.host}:{port}"
        r = httpx.post(
            f"{sagemaker}/invocations",
            content=NESTED,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert r.status_code == 400, r.text
        assert "error" in r.json()
        assert httpx.get(f"{s.base_url}/v2/health/ready").status_code == 200


def test_connect_and_unknown_methods_get_an_answer(server: RunningServer) -> None:
    for request, statuses in [
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", {400, 405}),
        (b"FROB /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n", {400, 405}),
        (b"PROPFIND /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", {405}),
    ]:
        with _connect(server) as sock:
            sock.sendall(request)
            assert _response(sock)[0] in statuses, request
    _served_meanwhile(server)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_limits_are_configurable(repo: Path, front_end: str) -> None:
    args = [
        "--http-server",
        front_end,
        "--http-max-url-size",
        "64",
        "--http-max-header-size",
        "512",
    ]
    with running_server(repo, args) as s:
        for request, status in [
            (b"GET /v2/health/live?" + b"a" * 30 + b" HTTP/1.1\r\nHost: x\r\n", 200),
            (b"GET /v2/health/live?" + b"a" * 60 + b" HTTP/1.1\r\nHost: x\r\n", 414),
            (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 400 + b"\r\n", 200),
            (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 600 + b"\r\n", 431),
        ]:
            with _connect(s) as sock:
                sock.sendall(request + b"Connection: close\r\n\r\n")
                assert _response(sock)[0] == status, request[:60]


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_sigterm_while_huge_headers_are_being_sent(repo: Path, front_end: str) -> None:
    """Four clients each sending a 300 MiB header (it took 2 GiB and a core for 11 minutes,
    and held SIGTERM up): the server still stops at once, cleanly."""
    server = start_server(repo, ["--http-server", front_end])
    socks: list[socket.socket] = []
    try:
        first = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: "
        senders = []
        for _ in range(4):
            sock = _connect(server)
            socks.append(sock)
            sender = threading.Thread(
                target=_send_forever, args=(sock, first, b"a" * 65536, 300 << 20), daemon=True
            )
            sender.start()
            senders.append(sender)
        _served_meanwhile(server)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.output()
        for sock in socks:
            sock.close()
        for sender in senders:
            sender.join(timeout=60)
    finally:
        for sock in socks:
            sock.close()
        server.stop()
