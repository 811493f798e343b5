"""Where a cheap ONNX model runs, measured: inline on the event loop, on a worker thread, with
and without dynamic batching (docs/architecture.md, "Past one core of Python").

    python bench/placement.py
"""

import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import run_cell
from servers import Modelyard
from workloads import WORKLOADS

base = WORKLOADS["mlp"]
variants = [
    ("inline, no batching", base.config_body, ""),
    ("dynamic_batching, inline", base.config_body + "dynamic_batching { }\n", ""),
    (
        "dynamic_batching, off-loop (inline-threshold 0)",
        base.config_body + "dynamic_batching { }\n",
        "--inline-threshold-us 0",
    ),
    ("no batching, off-loop", base.config_body, "--inline-threshold-us 0"),
]
print("| placement | c=1 req/s (low / high run) | c=16 | c=64 |")
print("| --- | --- | --- | --- |")
for label, body, extra in variants:
    w = dataclasses.replace(base, config_body=body)
    os.environ["BENCH_MODELYARD_ARGS"] = extra
    s = Modelyard()
    d = Path(tempfile.mkdtemp(prefix="modelyard-placement-"))
    try:
        s.start(d, [w])
        req = w.request("binary", s.port)
        out = []
        for c in (1, 16, 64):
            runs = [run_cell(s.port, req, c, 3, 0.5, server_pid=s.proc.pid)[0] for _ in range(2)]
            low, high = sorted(runs, key=lambda r: r.rps)
            out.append(
                f"{low.rps / 1e3:.1f}k / {high.rps / 1e3:.1f}k "
                f"({low.server_cpu_share:.2f} cores, p99 {low.p99_ms:.1f} ms)"
            )
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)
    print(f"| {label} | " + " | ".join(out) + " |", flush=True)
