"""Where an ONNX model runs, measured: inline on the event loop, on a worker thread, with
and without dynamic batching (docs/architecture.md, "Past one core of Python").

    python bench/placement.py          # the benchmark MLP, four placements
    python bench/placement.py --costs  # inline against worker threads, over model costs

``--costs`` is the measurement behind ``--inline-threshold-us``'s default: MLPs 64-W-W-10 of
growing width W (their in-process ``session.run`` p50 printed beside them), each served
with every execution inline and with every execution on worker threads.
"""

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import run_cell
from servers import Modelyard
from workloads import WORKLOADS

base = WORKLOADS["mlp"]


class _Wide(type(base)):  # type: ignore[misc]
    """The benchmark MLP with hidden layers ``width`` wide."""

    width: int = 256

    @cached_property
    def onnx_bytes(self) -> bytes:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.factories import onnx_models

        return bytes(onnx_models.mlp((64, self.width, self.width, 10)))


def _run_p50_us(w: object) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(w.onnx_bytes, so, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    for _ in range(200):
        sess.run(None, base.inputs)
    times = []
    for _ in range(500):
        t = time.perf_counter_ns()
        sess.run(None, base.inputs)
        times.append(time.perf_counter_ns() - t)
    return sorted(times)[len(times) // 2] / 1e3


@contextlib.contextmanager
def _serving(w: object, extra: str) -> Iterator[tuple[Modelyard, bytes]]:
    """modelyard serving ``w`` with these serve flags, and its binary request."""
    os.environ["BENCH_MODELYARD_ARGS"] = extra
    s = Modelyard()
    d = Path(tempfile.mkdtemp(prefix="modelyard-placement-"))
    try:
        s.start(d, [w])  # type: ignore[list-item]
        yield s, w.request("binary", s.port)  # type: ignore[attr-defined]
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def costs(widths: tuple[int, ...] = (256, 768, 1024, 1536, 2048)) -> None:
    print(
        "| hidden width | session.run p50 µs | placement | c=1 req/s (cores) | c=16 | c=64 | p99 c=64 ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for width in widths:
        w = _Wide(base.name, base.inputs, base.outputs, base.config_body)
        object.__setattr__(w, "width", width)
        p50 = _run_p50_us(w)
        for label, extra in (
            ("inline", "--inline-threshold-us 1000000"),
            ("worker threads", "--inline-threshold-us 0"),
        ):
            with _serving(w, extra) as (s, req):
                out, p99 = [], 0.0
                for c in (1, 16, 64):
                    r = run_cell(s.port, req, c, 3, 0.5, server_pid=s.proc.pid)[0]
                    out.append(f"{r.rps / 1e3:.2f}k ({r.server_cpu_share:.2f})")
                    p99 = r.p99_ms
            print(
                f"| {width} | {p50:.0f} | {label} | " + " | ".join(out) + f" | {p99:.1f} |",
                flush=True,
            )


if "--costs" in sys.argv[1:]:
    costs()
    sys.exit(0)

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
    with _serving(w, extra) as (s, req):
        out = []
        for c in (1, 16, 64):
            runs = [run_cell(s.port, req, c, 3, 0.5, server_pid=s.proc.pid)[0] for _ in range(2)]
            low, high = sorted(runs, key=lambda r: r.rps)
            out.append(
                f"{low.rps / 1e3:.1f}k / {high.rps / 1e3:.1f}k "
                f"({low.server_cpu_share:.2f} cores, p99 {low.p99_ms:.1f} ms)"
            )
    print(f"| {label} | " + " | ".join(out) + " |", flush=True)
