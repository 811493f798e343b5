"""SIGTERM in the middle of keep-alive traffic loses no request the server has been sent.

48 clients, each on its own keep-alive connection (``http.client``, as most clients reuse
a pooled connection), send requests back to back to a model that takes a few
milliseconds. SIGTERM arrives mid-traffic. What counts:

* a request answered, whatever the status: fine (503s are allowed; none is expected);
* a connection refused when a client (re)connects: fine, the listener had closed, the
  request never reached the server, and the client knows it was not processed;
* "Remote end closed connection without response", a reset or a broken pipe on a request
  sent over an open connection: lost. The client cannot tell whether the server read it,
  so it cannot safely retry a POST; the server must never close a keep-alive connection
  its client may be sending on, and must say ``Connection: close`` on the last response.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelyard.testing import RunningServer, start_server
from tests.factories.onnx_models import slow, write_model
from tests.integration.conftest import SLOW
from tests.integration.traffic import wait_in_flight

CLIENTS = 48
BODY = json.dumps(
    {"inputs": [{"name": "TRIPS", "shape": [1, 1], "datatype": "INT64", "data": [2]}]}
).encode()


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: int = 0
    answered_after_sigterm: int = 0
    closes: int = 0  # responses carrying Connection: close
    refused: int = 0
    lost: list[str] = field(default_factory=list)
    started: set[int] = field(default_factory=set)


def _client(index: int, host: str, port: int, tally: Tally, sigterm: threading.Event) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            after = sigterm.is_set()
            try:
                if conn.sock is None:
                    conn.connect()  # refused here: the listener is closed, nothing was sent
            except ConnectionRefusedError:
                with tally.lock:
                    tally.refused += 1
                return
            try:
                conn.request(
                    "POST",
                    "/v2/models/slow/infer",
                    BODY,
                    {"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                response.read()
            except (http.client.HTTPException, OSError) as exc:
                with tally.lock:
                    tally.lost.append(f"client {index}: {type(exc).__name__}: {exc}")
                return
            with tally.lock:
                tally.answered += 1
                tally.answered_after_sigterm += after
                tally.started.add(index)
                if response.will_close:
                    tally.closes += 1
            if response.will_close:
                conn.close()  # the next request reconnects, to a listener that has closed
    finally:
        conn.close()


@pytest.mark.parametrize("front_end", ["modelyard", "uvicorn"])
def test_sigterm_drain_loses_no_request(tmp_path: Path, front_end: str) -> None:
    write_model(tmp_path, "slow", slow(), SLOW)
    server = start_server(
        tmp_path,
        ["--http-server", front_end, "--model-control-mode", "none", "--exit-timeout-secs", "60"],
    )
    tally = Tally()
    sigterm = threading.Event()
    threads = [
        threading.Thread(
            target=_client, args=(i, server.host, server.port, tally, sigterm), daemon=True
        )
        for i in range(CLIENTS)
    ]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60  # every client is in its keep-alive loop
        while len(tally.started) < CLIENTS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(tally.started) == CLIENTS, tally
        time.sleep(0.3)
        sigterm.set()
        server.process.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=120)
        assert server.process.wait(timeout=60) == 0, server.output()[-3000:]
    finally:
        server.stop()
    assert not tally.lost, f"{len(tally.lost)} requests lost: {tally.lost[:5]}"
    assert tally.refused == CLIENTS  # every client ended on the closed listener...
    assert tally.closes >= 1  # ...after being told, on a response, that the connection closes


def _slow_request(server: RunningServer, seconds: float) -> bytes:
    """The raw bytes of one request to the slow model that runs about ``seconds``."""
    trips = _trips_for(seconds, server.host, server.port)
    body = json.dumps(
        {"inputs": [{"name": "TRIPS", "shape": [1, 1], "datatype": "INT64", "data": [trips]}]}
    ).encode()
    return b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def _read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("front_end", ["modelyard", "uvicorn"])
def test_pipelined_requests_received_before_sigterm_are_all_answered(
    tmp_path: Path, front_end: str
) -> None:
    """A slow request and a quick one pipelined behind it, SIGTERM while the first runs: both
    are answered, the first keeping the connection open, the last closing it (the drain used
    to close the connection after the first, dropping the second unanswered)."""
    write_model(tmp_path, "slow", slow(), SLOW)
    server = start_server(tmp_path, ["--http-server", front_end, "--model-control-mode", "none"])
    try:
        sock = socket.create_connection((server.host, server.port), timeout=60)
        with sock:
            sock.sendall(
                _slow_request(server, 1.0) + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            wait_in_flight(server, "slow", 1)  # both requests are in; the first is executing
            server.process.send_signal(signal.SIGTERM)
            data = _read_to_close(sock)
        first, _, rest = data.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200"), data[:300]
        assert b"connection: close" not in first.lower()
        assert rest.count(b"HTTP/1.1 200 OK") == 1, data[:600]
        assert b"connection: close" in rest.split(b"HTTP/1.1 200 OK", 1)[1].lower()
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()


@pytest.mark.parametrize("front_end", ["modelyard", "uvicorn"])
def test_request_sent_during_the_drain_behind_one_in_flight_is_answered(
    tmp_path: Path, front_end: str
) -> None:
    """A client pipelines a request while its previous one is still running and the drain
    has begun: both are answered, the second with Connection: close."""
    write_model(tmp_path, "slow", slow(), SLOW)
    server = start_server(tmp_path, ["--http-server", front_end, "--model-control-mode", "none"])
    try:
        sock = socket.create_connection((server.host, server.port), timeout=60)
        with sock:
            sock.sendall(_slow_request(server, 4.0))
            wait_in_flight(server, "slow", 1)  # executing
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30  # the drain has begun once the listener is shut
            while time.monotonic() < deadline:
                try:
                    socket.create_connection((server.host, server.port), timeout=5).close()
                except ConnectionRefusedError:
                    break
                time.sleep(0.02)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            data = _read_to_close(sock)
        assert data.count(b"HTTP/1.1 200 OK") == 2, data[:600]
        first, _, rest = data.partition(b"\r\n\r\n")
        assert b"connection: close" not in first.lower()
        assert b"connection: close" in rest.split(b"HTTP/1.1 200 OK", 1)[1].lower()
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()


def _trips_for(seconds: float, host: str, port: int) -> int:
    """Rounds of the slow model that take about ``seconds`` on this machine."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        start = time.perf_counter()
        body = json.dumps(
            {"inputs": [{"name": "TRIPS", "shape": [1, 1], "datatype": "INT64", "data": [200]}]}
        ).encode()
        conn.request("POST", "/v2/models/slow/infer", body)
        assert conn.getresponse().read()
        per_trip = (time.perf_counter() - start) / 200
    finally:
        conn.close()
    return max(200, int(seconds / per_trip))
