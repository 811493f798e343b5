"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, one request in flight on each.

With ``--grpc`` it speaks gRPC instead: N channels (an HTTP/2 connection each), one unary
``inference.GRPCInferenceService/ModelInfer`` in flight on each, through grpcio's asyncio
client with no (de)serialisation: the request file holds the serialised ``ModelInferRequest``
and answers are taken as bytes.

Run as its own process (``python bench/loadgen.py ...``) so its CPU is measured apart from the
caller's; it prints one JSON line. Request bytes are built once by the caller and sent verbatim;
responses are parsed only as far as the status code and ``Content-Length``. Under uvloop it costs
about 10-15 µs of CPU per request, and it reports its own CPU share so a reader can tell when the
client, not the server, was the bottleneck.

Given ``--server-pid``, it also reads the CPU time (user + system) of the server's whole process
tree at the edges of the measured window: the server process, its descendants and every process
in its process group (Triton's Python-backend stubs, modelyard's worker processes). The tree is
listed once after the connections are made (it is stable by then) and again at the end, to
count processes that appeared during the window. Only ``/proc/<pid>/stat`` is read at the window's
edges, so the client's loop stalls for microseconds, not for a process scan.

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
from typing import Any

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
    # the server's process tree (with --server-pid; NaN without): CPU time / wall time, i.e.
    # cores used, and CPU µs per completed request, over the same window
    server_cpu_share: float = float("nan")
    server_us_per_req: float = float("nan")
    server_procs: int = 0  # processes in the tree at the end of the window
    # cores per kind of process, largest first, with its voluntary context switches per request:
    # "tritonserver 0.52 (3.3 sleeps/req), triton_python_backend_stub 0.31 (1.7 sleeps/req)"
    server_cpu_split: str = ""
    # cores the rest of the machine used meanwhile (neither the server's tree nor the client):
    # anything else running shows here, and the cell is suspect when it is well above zero
    other_cpu_share: float = float("nan")


class _Stats:
    def __init__(self) -> None:
        self.recording = False
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = ""
        self.ready = 0  # gRPC channels connected
        self.all_ready: asyncio.Event | None = None  # set once ``ready`` reaches ``want``
        self.want = 0


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


def _label(proc: Any) -> str:
    """A short name for a process: its executable, or for Python the module or script it runs."""
    name = str(proc.name())
    if not name.startswith("python"):
        return name
    cmd = proc.cmdline()
    for i, arg in enumerate(cmd[1:-1], 1):
        if arg == "-m":
            return str(cmd[i + 1])
    scripts = [a for a in cmd[1:] if not a.startswith("-")]
    return Path(scripts[0]).name if scripts else name


class ServerTree:
    """CPU time of a server's process tree: the process, its descendants, its process group."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.psutil = psutil
        self.pid = pid
        self.procs: dict[int, Any] = {}
        self.labels: dict[int, str] = {}
        self.scan()

    def scan(self) -> None:
        ps = self.psutil
        try:
            root = ps.Process(self.pid)
            pgid = os.getpgid(self.pid)
            found = [root, *root.children(recursive=True)]
        except (ps.Error, ProcessLookupError):
            return
        for p in ps.process_iter():
            with contextlib.suppress(ps.Error, ProcessLookupError):
                if os.getpgid(p.pid) == pgid:
                    found.append(p)
        for p in found:
            if p.pid not in self.procs and p.pid != os.getpid():
                with contextlib.suppress(ps.Error):
                    self.labels[p.pid] = _label(p)
                    self.procs[p.pid] = p

    def times(self) -> dict[int, tuple[float, int]]:
        """(user + system seconds, voluntary context switches) of every known live process."""
        out = {}
        for pid, p in self.procs.items():
            with contextlib.suppress(self.psutil.Error):
                t = p.cpu_times()
                out[pid] = (t.user + t.system, _voluntary_switches(pid))
        return out

    def usage(
        self,
        before: dict[int, tuple[float, int]],
        after: dict[int, tuple[float, int]],
        wall: float,
        requests: int,
    ) -> dict[str, float | int | str]:
        """Cores used between two ``times()``, in all and per kind of process. A process's
        voluntary context switches per request say how often it went to sleep: a process
        that spins waiting for work shows well under one per request it takes part in."""
        cpu: dict[str, float] = {}
        sleeps: dict[str, int] = {}
        for pid, (t, vol) in after.items():
            t0, vol0 = before.get(pid, (0.0, 0))
            label = self.labels[pid]
            cpu[label] = cpu.get(label, 0.0) + t - t0
            sleeps[label] = sleeps.get(label, 0) + vol - vol0
        total = sum(cpu.values())
        parts = []
        for label, used in sorted(cpu.items(), key=lambda kv: -kv[1]):
            per = f" ({sleeps[label] / requests:.1f} sleeps/req)" if requests else ""
            parts.append(f"{label} {used / wall:.2f}{per}")
        return {
            "server_cpu_share": total / wall,
            "server_us_per_req": total / requests * 1e6 if requests else float("nan"),
            "server_procs": len(after),
            "server_cpu_split": ", ".join(parts),
        }


async def _grpc_worker(
    host: str, port: int, request: bytes, stats: _Stats, stop: asyncio.Event
) -> None:
    """One channel, one ModelInfer in flight at a time, until ``stop``."""
    import grpc

    async with grpc.aio.insecure_channel(
        f"{host}:{port}", options=[("grpc.max_receive_message_length", -1)]
    ) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        await channel.channel_ready()
        stats.ready += 1
        if stats.ready == stats.want and stats.all_ready is not None:
            stats.all_ready.set()
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                await infer(request)
            except grpc.RpcError as exc:
                stats.errors += 1
                if not stats.first_error:
                    stats.first_error = f"{exc.code()}: {exc.details()}"
                continue
            if stats.recording:
                stats.latencies.append(time.perf_counter() - t0)


def _voluntary_switches(pid: int) -> int:
    """Voluntary context switches of all a process's threads (psutil's figure, from
    /proc/<pid>/status, is the main thread's only)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
    return total


def _machine_busy() -> float:
    """Seconds of CPU time the whole machine has spent busy (all cores), from /proc/stat."""
    import psutil

    t = psutil.cpu_times()
    # guest time is already inside user time; idle and iowait are not busy
    skip = ("idle", "iowait", "guest", "guest_nice")
    return float(sum(v for k, v in t._asdict().items() if k not in skip))


async def _run(
    host: str,
    port: int,
    request: bytes,
    concurrency: int,
    warmup: float,
    duration: float,
    server_pid: int | None = None,
    grpc_mode: bool = False,
) -> dict[str, float | int | str]:
    loop = asyncio.get_running_loop()
    stats = _Stats()
    stop = asyncio.Event()
    closed: list[asyncio.Future[Any]] = []
    if grpc_mode:
        stats.want, stats.all_ready = concurrency, asyncio.Event()
        for _ in range(concurrency):
            closed.append(asyncio.ensure_future(_grpc_worker(host, port, request, stats, stop)))
        ready = asyncio.ensure_future(stats.all_ready.wait())
        await asyncio.wait([ready, *closed], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
    for _ in range(0 if grpc_mode else concurrency):
        _, proto = await loop.create_connection(lambda: _Conn(request, stats, stop), host, port)
        closed.append(proto.closed)
    tree = ServerTree(server_pid) if server_pid else None
    await asyncio.sleep(warmup)
    s0 = tree.times() if tree else {}
    busy0 = _machine_busy()
    stats.recording = True
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(duration)
    stats.recording = False
    cpu1, t1 = time.process_time(), time.perf_counter()
    busy1 = _machine_busy()
    s1 = tree.times() if tree else {}
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*closed, return_exceptions=True), timeout=10)
    lat = sorted(stats.latencies)
    n = len(lat)
    if n == 0 and not stats.first_error:
        stats.first_error = "no response completed"
        stats.errors += 1
    wall = t1 - t0
    server: dict[str, float | int | str] = {}
    if tree is not None:
        known = set(tree.procs)
        tree.scan()  # processes born during the window count with all their CPU time
        s1.update({pid: t for pid, t in tree.times().items() if pid not in known})
        server = tree.usage(s0, s1, wall, n)
        others = (busy1 - busy0) / wall - float(server["server_cpu_share"])
        server["other_cpu_share"] = max(0.0, others - (cpu1 - cpu0) / wall)
    return {
        "rps": n / wall,
        "p50_ms": lat[n // 2] * 1e3 if n else float("nan"),
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3 if n else float("nan"),
        "requests": n,
        "errors": stats.errors,
        "first_error": stats.first_error,
        "client_cpu_share": (cpu1 - cpu0) / wall,
        "client_us_per_req": (cpu1 - cpu0) / n * 1e6 if n else float("nan"),
        **server,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--request-file", type=Path, required=True, help="raw HTTP request bytes")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--server-pid", type=int, help="also measure this server's process tree's CPU")
    p.add_argument("--grpc", action="store_true", help="the request file is a ModelInferRequest")
    a = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # still correct without it, just costlier per request
        run = asyncio.run
    else:
        run = uvloop.run
    request = a.request_file.read_bytes()
    result = run(
        _run(a.host, a.port, request, a.concurrency, a.warmup, a.duration, a.server_pid, a.grpc)
    )
    print(json.dumps(result))


def run_cell(
    port: int,
    request: bytes,
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
    server_pid: int | None = None,
    grpc_mode: bool = False,
) -> tuple[CellResult, str]:
    """Run the load generator in a fresh process; returns the result and its first error, if any.

    With ``server_pid`` (the server's process, the leader of its process group), the result also
    says how much CPU the server's process tree used over the measured window."""
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
                *(["--server-pid", str(server_pid)] if server_pid else []),
                *(["--grpc"] if grpc_mode else []),
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
