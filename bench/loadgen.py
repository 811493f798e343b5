"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, one request in flight on each.

Run as its own process (``python bench/loadgen.py ...``) so its CPU is measured apart from the
caller's; it prints one JSON line. Request bytes are built once by the caller and sent verbatim;
responses are parsed only as far as the status code and ``Content-Length``. Under uvloop it costs
about 10-15 µs of CPU per request, and it reports its own CPU share so a reader can tell when the
client, not the server, was the bottleneck.

``run_cell()`` is the caller's side: it writes the request to a file and runs the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_CRLF2 = b"\r\n\r\n"


@dataclass(frozen=True)
class CellResult:
    """One measured run: throughput, latency percentiles (ms) and the client's CPU share."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    client_cpu_share: float  # client process CPU time / wall time, over the measured window
    client_us_per_req: float  # client CPU µs per completed request


class _Stats:
    def __init__(self) -> None:
        self.recording = False
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = ""


class _Conn(asyncio.Protocol):
    """One keep-alive connection: send, read one whole response, send again."""

    def __init__(self, request: bytes, stats: _Stats, stop: asyncio.Event) -> None:
        self.request = request
        self.stats = stats
        self.stop = stop
        self.buf = b""
        self.need = -1  # total bytes of the current response, once its head is parsed
        self.t0 = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.t0 = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.need < 0:
            end = buf.find(_CRLF2)
            if end < 0:
                self.buf = buf
                return
            head = buf[:end].lower()
            i = head.find(b"\r\ncontent-length:")
            if i < 0:
                self._fail(b"no content-length: " + head[:200])
                return
            j = head.find(b"\r\n", i + 17)
            self.need = end + 4 + int(head[i + 17 : j if j > 0 else len(head)])
            if buf[9:12] != b"200":
                self.stats.errors += 1
                if not self.stats.first_error:
                    self.stats.first_error = buf[: min(len(buf), 300)].decode("latin-1")
        if len(buf) < self.need:
            self.buf = buf
            return
        if len(buf) > self.need:  # only one request is ever in flight: extra bytes are a bug
            self._fail(b"unexpected bytes after response")
            return
        self.buf = b""
        self.need = -1
        if self.stats.recording:
            self.stats.latencies.append(time.perf_counter() - self.t0)
        if self.stop.is_set():
            assert self.transport is not None
            self.transport.close()
        else:
            self._send()

    def _fail(self, why: bytes) -> None:
        self.stats.errors += 1
        if not self.stats.first_error:
            self.stats.first_error = why.decode("latin-1")
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stop.is_set():
            self.stats.errors += 1
            if not self.stats.first_error:
                self.stats.first_error = f"connection lost: {exc!r}"
        if not self.closed.done():
            self.closed.set_result(None)


async def _run(
    host: str, port: int, request: bytes, concurrency: int, warmup: float, duration: float
) -> dict[str, float | int | str]:
    loop = asyncio.get_running_loop()
    stats = _Stats()
    stop = asyncio.Event()
    conns: list[_Conn] = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(lambda: _Conn(request, stats, stop), host, port)
        conns.append(proto)
    await asyncio.sleep(warmup)
    stats.recording = True
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(duration)
    stats.recording = False
    cpu1, t1 = time.process_time(), time.perf_counter()
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), timeout=10)
    lat = sorted(stats.latencies)
    n = len(lat)
    if n == 0 and not stats.first_error:
        stats.first_error = "no response completed"
        stats.errors += 1
    wall = t1 - t0
    return {
        "rps": n / wall,
        "p50_ms": lat[n // 2] * 1e3 if n else float("nan"),
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3 if n else float("nan"),
        "requests": n,
        "errors": stats.errors,
        "first_error": stats.first_error,
        "client_cpu_share": (cpu1 - cpu0) / wall,
        "client_us_per_req": (cpu1 - cpu0) / n * 1e6 if n else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--request-file", type=Path, required=True, help="raw HTTP request bytes")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    a = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # still correct without it, just costlier per request
        run = asyncio.run
    else:
        run = uvloop.run
    request = a.request_file.read_bytes()
    result = run(_run(a.host, a.port, request, a.concurrency, a.warmup, a.duration))
    print(json.dumps(result))


def run_cell(
    port: int, request: bytes, concurrency: int, duration: float, warmup: float = 1.0
) -> tuple[CellResult, str]:
    """Run the load generator in a fresh process; returns the result and its first error, if any."""
    with tempfile.NamedTemporaryFile(prefix="bench-req-", delete=False) as f:
        f.write(request)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--port",
                str(port),
                "--request-file",
                f.name,
                "--concurrency",
                str(concurrency),
                "--warmup",
                str(warmup),
                "--duration",
                str(duration),
            ],
            capture_output=True,
            text=True,
            timeout=warmup + duration + 60,
            check=False,
        )
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.strip()[-2000:]}")
    d = json.loads(proc.stdout.strip().splitlines()[-1])
    first_error = str(d.pop("first_error"))
    return CellResult(**d), first_error


if __name__ == "__main__":
    main()
