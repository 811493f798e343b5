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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelyard.testing import start_server
from tests.factories.onnx_models import slow, write_model
from tests.integration.conftest import SLOW

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
