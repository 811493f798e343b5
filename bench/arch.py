"""The measurements behind docs/architecture.md: where a request's time goes, front-end and
placement options, and what a second process would cost. Prints a markdown table.

    python bench/arch.py [--duration 3] [--repeats 2]

Each row serves the MLP workload (bench/workloads.py) from a fresh server and drives it with
the same load generator as bench/run.py; the server's CPU use is sampled with psutil over the
measured window (100% = one core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen import run_cell
from modelyard.testing import start_server
from workloads import WORKLOADS

ONE_THREAD = 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'

VARIANTS: list[tuple[str, list[str], str]] = [
    ("own front end, inline placement (default)", [], ""),
    (
        "own front end, worker thread always (--inline-threshold-us 0)",
        ["--inline-threshold-us", "0"],
        "",
    ),
    ("uvicorn (httptools, uvloop) front end, same app", ["--http-server", "uvicorn"], ""),
    ("own front end, onnxruntime intra_op_thread_count 1", [], ONE_THREAD),
]


def _repo(extra_config: str) -> Path:
    w = WORKLOADS["mlp"]
    repo = Path(tempfile.mkdtemp(prefix="arch-"))
    (repo / "mlp" / "1").mkdir(parents=True)
    (repo / "mlp" / "1" / "model.onnx").write_bytes(w.onnx_bytes)
    (repo / "mlp" / "config.pbtxt").write_text(
        'name: "mlp"\nbackend: "onnxruntime"\n' + w.config_body + extra_config
    )
    return repo


def _cpu_during(pid: int, seconds: float, out: list[float]) -> None:
    proc = psutil.Process(pid)
    time.sleep(1.0)  # skip the load generator's warm-up
    before = sum(proc.cpu_times()[:2])
    time.sleep(seconds - 1.0)
    out.append(100 * (sum(proc.cpu_times()[:2]) - before) / (seconds - 1.0))


def measure(flags: list[str], extra_config: str, args: argparse.Namespace) -> dict[str, str]:
    server = start_server(_repo(extra_config), flags)
    row: dict[str, str] = {}
    try:
        rss = psutil.Process(server.process.pid).memory_info().rss
        row["rss"] = f"{rss / 2**20:.0f} MiB"
        for enc in ("json", "binary"):
            request = WORKLOADS["mlp"].http_request(enc, server.port)
            for c in (1, 16, 64):
                rps, p50, cpu = [], [], []
                for _ in range(args.repeats):
                    cpu_out: list[float] = []
                    t = threading.Thread(
                        target=_cpu_during, args=(server.process.pid, args.duration + 1.0, cpu_out)
                    )
                    t.start()
                    result, _ = run_cell(server.port, request, c, args.duration, 1.0)
                    t.join()
                    rps.append(result.rps)
                    p50.append(result.p50_ms)
                    cpu.append(cpu_out[0] if cpu_out else float("nan"))
                row[f"{enc} c={c}"] = (
                    f"{statistics.median(rps) / 1000:.1f}k / {statistics.median(p50):.2f} ms"
                    f" / {statistics.median(cpu):.0f}%"
                )
    finally:
        server.stop()
    return row


def pipe_round_trip_us(n: int = 20000) -> float:
    """Lower bound for handing work to another process and back: a 1-byte pipe ping-pong."""
    a_r, b_w = os.pipe()
    b_r, a_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: echo
        for _ in range(n):
            os.write(a_w, os.read(a_r, 1))
        os._exit(0)
    start = time.perf_counter()
    for _ in range(n):
        os.write(b_w, b"x")
        os.read(b_r, 1)
    elapsed = time.perf_counter() - start
    os.waitpid(pid, 0)
    return elapsed / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    cells = [f"{e} c={c}" for e in ("json", "binary") for c in (1, 16, 64)]
    print(
        f"mlp (64-256-256-10), {os.cpu_count()} CPUs shared with the load generator; "
        f"each cell: req/s / p50 / server CPU (100% = one core), median of {args.repeats}"
    )
    print()
    print("| variant | RSS | " + " | ".join(cells) + " |")
    print("|---|---|" + "---|" * len(cells))
    for name, flags, extra in VARIANTS:
        row = measure(flags, extra, args)
        print(f"| {name} | {row['rss']} | " + " | ".join(row[c] for c in cells) + " |", flush=True)
    print()
    print(
        f"process hand-off floor (1-byte pipe round trip between two processes): "
        f"{pipe_round_trip_us():.1f} µs"
    )


if __name__ == "__main__":
    main()
