"""Start a real ``modelyard serve`` process for tests, wait until it is ready, stop it.

This is the harness modelyard's own integration tests use, and the one ``modelyard test``
(the deploy loop) builds on: the server runs as it would in production, in its own process,
on a free port of 127.0.0.1. Readiness is polled on ``/v2/health/ready`` and the wait stops
early, with the server's output, if the process dies, so a broken repository fails a test in
a second rather than after a timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ServerFailed(RuntimeError):
    """The server process exited or never became ready; the message holds its output."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different free ports: each socket stays bound until all are chosen (one
    :func:`free_port` after another can hand out the same port twice, and a server given
    it for two listeners fails to start)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(int(s.getsockname()[1]))
        return ports


@dataclass
class RunningServer:
    """A started server: its process, its address and a file holding its output."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)
    metrics_port: int | None = None  # the metrics port the harness chose, if it chose one
    cache_dir: Path | None = None  # the model cache the harness made (removed at stop)
    # headers every request to this server needs (a restricted health group, a token):
    # what the readiness poll sent, for tests and tools to send as well
    headers: dict[str, str] = field(default_factory=dict)
    grpc_port: int | None = None  # the gRPC port the harness chose, if it chose one

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint, the form ``tritonclient.grpc`` takes."""
        if self.grpc_port is None:
            raise ValueError("this server was started without a gRPC port the harness knows")
        return f"{self.host}:{self.grpc_port}"

    @property
    def url(self) -> str:
        """``host:port``, the form tritonclient takes."""
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the drain, then SIGKILL if it hangs; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        return int(self.process.returncode)


def _ready(host: str, port: int, headers: dict[str, str] | None = None) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", "/v2/health/ready", headers=headers or {})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _flag_value(args: Sequence[str], flag: str) -> int | None:
    """The integer a flag was given (``--flag N`` or ``--flag=N``), if it was."""
    for i, arg in enumerate(args):
        value = None
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        if value is not None and value.isdigit():
            return int(value)
    return None


def start_server(
    model_repository: Path | str,
    extra_args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> RunningServer:
    """Start ``python -m modelyard serve`` and return once ``/v2/health/ready`` says 200.

    ``headers`` go with the readiness poll: a server started with ``--http-restricted-api
    health:...`` answers its probes only with that header.
    """
    # the HTTP, metrics and gRPC ports this harness chooses, all different
    spare = free_ports(3, host)
    if port:
        spare = [p for p in spare if p != port]
    port = port or spare.pop()
    extra_args = list(extra_args)
    own_cache = None
    if not any(a.startswith("--model-cache-dir") for a in extra_args):
        # each server its own model cache, unless the test is about sharing one
        own_cache = Path(tempfile.mkdtemp(prefix="modelyard-cache-"))
        extra_args += ["--model-cache-dir", str(own_cache)]
    if not any(a.startswith("--python-env-dir") for a in extra_args):
        # Python model environments too: built and unpacked where the test can see them
        env_dir = (own_cache or Path(tempfile.mkdtemp(prefix="modelyard-envs-"))) / "python-envs"
        extra_args += ["--python-env-dir", str(env_dir)]
    metrics_port = None
    if not any(a.startswith("--metrics-port") for a in extra_args):
        metrics_port = spare.pop()  # Triton's 8002 would clash between servers
        extra_args += ["--metrics-port", str(metrics_port)]
    grpc_port = _flag_value(extra_args, "--grpc-port")
    if grpc_port is None and not any(a.startswith("--allow-grpc") for a in extra_args):
        grpc_port = spare.pop()  # Triton's 8001 would clash between servers
        extra_args += ["--grpc-port", str(grpc_port)]
    args = [
        sys.executable,
        "-m",
        "modelyard",
        "serve",
        "--model-repository",
        str(model_repository),
        "--http-address",
        host,
        "--http-port",
        str(port),
        *extra_args,
    ]
    fd, name = tempfile.mkstemp(prefix="modelyard-server-", suffix=".log")
    log_path = Path(name)
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    server = RunningServer(
        process, host, port, log_path, args, metrics_port, own_cache, dict(headers or {}), grpc_port
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(
                f"modelyard exited with code {process.returncode} before it was ready:\n"
                f"{server.output()}"
            )
        if _ready(host, port, server.headers):
            return server
        time.sleep(0.05)
    server.stop(timeout=5)
    raise ServerFailed(f"modelyard was not ready after {timeout} s:\n{server.output()}")


@contextlib.contextmanager
def running_server(
    model_repository: Path | str,
    extra_args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[RunningServer]:
    """``with running_server(repo) as server: ...``: started, ready, and stopped afterwards."""
    server = start_server(
        model_repository,
        extra_args,
        host=host,
        port=port,
        timeout=timeout,
        env=env,
        headers=headers,
    )
    try:
        yield server
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            server.log_path.unlink()
