"""A real S3 protocol server (moto's server mode) in a subprocess on 127.0.0.1, and buckets.

Fixtures shared by the store tests and the serving tests (registered in conftest.py).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest


@dataclass(frozen=True)
class MotoServer:
    host_port: str  # "127.0.0.1:PORT"
    log: Path  # one line per request (werkzeug's access log)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host_port}"

    def requests(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if '"GET ' in line]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    """moto's server on 127.0.0.1:``port``, ready (its state starts empty), logging to ``log``."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            pytest.fail(f"moto server exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                return proc
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                stop_moto(proc)
                pytest.fail(f"moto server not ready after 30 s: {log.read_text()}")
            time.sleep(0.05)


def stop_moto(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "access.log"
    proc = start_moto(port, log)
    try:
        yield MotoServer(f"127.0.0.1:{port}", log)
    finally:
        stop_moto(proc)


class ThrottledProxy:
    """A TCP proxy in front of an S3 server: answers flow at most ``rate`` bytes/s (None:
    unthrottled), ``downstream`` counts them, and ``stop`` is an outage: the listener
    closes and every open connection is cut, mid-response included. ``start`` again
    listens on the same port, so a server keeps its store URL across the outage."""

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or _free_port()
        self.rate: float | None = None
        self.downstream = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            # a reset, as when the S3 host goes away; shutdown first: it wakes the pump
            # thread blocked on the socket, which a close alone would not
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answer: bool) -> None:
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if answer:
                    rate = self.rate
                    if rate is not None:
                        time.sleep(len(data) / rate)
                    with self._lock:
                        self.downstream += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pytest.MonkeyPatch]:
    """Credentials and region for moto, and no configuration from this machine's user."""
    nowhere = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(nowhere))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        yield mp


@pytest.fixture
def s3(moto_server: MotoServer, aws_env: pytest.MonkeyPatch) -> Any:
    """A boto3 S3 client of moto's server, for the test to arrange a bucket with."""
    return boto3.client("s3", endpoint_url=moto_server.endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name
