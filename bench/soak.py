"""Soak: churn over more models than fit in the memory budget, for N minutes, RSS watched.

Starts ``modelyard serve`` (on-demand, the default) on a local repository of ``--models``
ONNX MLPs and ``--python-models`` Python-backend add/sub models under a ``--memory-budget``
that holds only a few of them, then ``--clients`` closed-loop clients (threads, one
keep-alive connection each) send v2 JSON inferences to uniformly random models for
``--minutes``: nearly every request is a miss that evicts another model. From outside the
server, psutil samples the resident memory of its whole process tree (the server and its
Python model workers) every ``--rss-interval`` seconds. Prints a markdown table: requests,
failures (with their first texts; never retried), evictions and loads (deltas of
``/metrics``), and RSS min / median / p99 / max plus the median of the first and of the last
fifth of the run (a leak shows as a last fifth above the first). The same table goes to
``--output``, with a line describing the machine.

    python bench/soak.py --minutes 2                  # what docs/robustness.md shows
    python bench/soak.py --minutes 30 --clients 8 --output bench/results/soak.md

Exit code 1 when any request failed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.factories.onnx_models import mlp, write_model  # noqa: E402
from tests.factories.python_models import add_sub_model  # noqa: E402

from modelyard.testing.server import RunningServer, start_server  # noqa: E402

MiB = 1 << 20
HIDDEN = 1024  # 64 -> 1024 -> 1024 -> 10: ~4.5 MB of FP32 weights per model
CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: 8
input [ {{ name: "INPUT", data_type: TYPE_FP32, dims: [ 64 ] }} ]
output [ {{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ 10 ] }} ]
"""
MLP_BODY = orjson.dumps(
    {"inputs": [{"name": "INPUT", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
)
PY_BODY = orjson.dumps(
    {
        "inputs": [
            {"name": "INPUT0", "shape": [16], "datatype": "FP32", "data": [1.0] * 16},
            {"name": "INPUT1", "shape": [16], "datatype": "FP32", "data": [2.0] * 16},
        ]
    }
)


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_repository(folder: Path, models: int, python_models: int) -> dict[str, bytes]:
    """The repository; returns each model's request body."""
    bodies = {}
    for i in range(models):
        name = f"mlp{i:03d}"
        write_model(folder, name, mlp((64, HIDDEN, HIDDEN, 10), seed=i), CONFIG.format(name=name))
        bodies[name] = MLP_BODY
    for i in range(python_models):
        name = f"py{i:02d}"
        add_sub_model(folder, name)
        bodies[name] = PY_BODY
    return bodies


# -- measuring --------------------------------------------------------------------------------
def rss_tree(pid: int) -> int:
    """Resident bytes of a process and all its descendants (what the host pays)."""
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        # a worker that exited between listing and reading counts nothing
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def metrics(server: RunningServer) -> dict[str, float]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


@dataclass
class Tally:
    requests: int = 0
    failures: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ok: bool, error: str = "") -> None:
        with self.lock:
            self.requests += 1
            if not ok:
                self.failures += 1
                self.errors[error[:200]] += 1


def client(
    server: RunningServer, bodies: dict[str, bytes], seed: int, stop: float, tally: Tally
) -> None:
    rng = random.Random(seed)
    names = sorted(bodies)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=300)
    headers = {"Content-Type": "application/json"}
    while time.monotonic() < stop:
        name = rng.choice(names)
        try:
            conn.request("POST", f"/v2/models/{name}/infer", bodies[name], headers)
            response = conn.getresponse()
            body = response.read()
            tally.add(response.status == 200, f"{response.status} {body[:160]!r}")
        except (OSError, http.client.HTTPException) as exc:
            tally.add(False, f"{type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection(server.host, server.port, timeout=300)
    conn.close()


def sample_rss(pid: int, interval: float, stop: threading.Event, out: list[int]) -> None:
    while not stop.is_set():
        try:
            out.append(rss_tree(pid))
        except psutil.NoSuchProcess:
            return
        stop.wait(interval)


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / (1 << 30)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({model or platform.processor()}), {memory:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"load average at the end {load}"
    )


# -- the run ------------------------------------------------------------------------------
def run(args: argparse.Namespace, workdir: Path) -> int:
    repo = workdir / "repo"
    bodies = build_repository(repo, args.models, args.python_models)
    log(f"repository: {args.models} MLPs (~4.5 MB weights each), {args.python_models} Python")
    server_args = ["--memory-budget", args.memory_budget, "--log-verbose", "0"]
    server = start_server(repo, server_args, timeout=120)
    try:
        log(f"server {server.base_url}, pid {server.process.pid}, budget {args.memory_budget}")
        first = metrics(server)
        tally = Tally()
        samples: list[int] = []
        stop_sampling = threading.Event()
        sampler = threading.Thread(
            target=sample_rss, args=(server.process.pid, args.rss_interval, stop_sampling, samples)
        )
        sampler.start()
        start = time.monotonic()
        stop = start + args.minutes * 60
        clients = [
            threading.Thread(target=client, args=(server, bodies, args.seed + i, stop, tally))
            for i in range(args.clients)
        ]
        for t in clients:
            t.start()
        for t in clients:
            while t.is_alive():
                t.join(10.0)
                log(f"{tally.requests} requests, {tally.failures} failures")
        elapsed = time.monotonic() - start
        stop_sampling.set()
        sampler.join()
        last = metrics(server)
        alive = server.process.poll() is None
    finally:
        code = server.stop()
        log(f"server stopped, exit code {code}")

    def delta(name: str) -> int:
        return int(last.get(name, 0.0) - first.get(name, 0.0))

    fifth = max(1, len(samples) // 5)
    mib = lambda b: f"{b / MiB:.0f} MiB"  # noqa: E731
    rows = [
        ("duration", f"{elapsed:.0f} s, {args.clients} clients, uniform over {len(bodies)} models"),
        ("memory budget", args.memory_budget),
        ("requests", f"{tally.requests} ({tally.requests / elapsed:.1f}/s)"),
        ("failures", str(tally.failures)),
        ("evictions", str(delta("modelyard_model_evictions_total"))),
        ("loads", str(delta("modelyard_model_load_seconds_count"))),
        ("RSS samples", f"{len(samples)}, every {args.rss_interval:g} s (server + workers)"),
        (
            "RSS min / median / p99 / max",
            " / ".join(
                mib(v)
                for v in (
                    min(samples),
                    int(statistics.median(samples)),
                    percentile(samples, 0.99),
                    max(samples),
                )
            ),
        ),
        (
            "RSS median, first fifth -> last fifth",
            (
                f"{mib(int(statistics.median(samples[:fifth])))} -> "
                f"{mib(int(statistics.median(samples[-fifth:])))}"
            ),
        ),
        ("server alive at the end", "yes" if alive else "NO"),
    ]
    lines = ["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    if tally.errors:
        lines += ["", "Failures (first texts):", ""]
        lines += [f"- {n} x `{text}`" for text, n in tally.errors.most_common(5)]
    lines += ["", f"Machine: {machine()}."]
    table = "\n".join(lines)
    print(table)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(table + "\n")
    return 1 if tally.failures or not alive else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="how long the churn runs")
    parser.add_argument("--models", type=int, default=30, help="ONNX MLPs (~17 MiB booked each)")
    parser.add_argument("--python-models", type=int, default=2, help="Python add/sub models")
    parser.add_argument("--memory-budget", default="96MiB", help="holds about 5 MLPs")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rss-interval", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", help="also write the table here")
    parser.add_argument("--keep", action="store_true", help="keep the repository folder")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="modelyard-soak-"))
    try:
        return run(args, workdir)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
