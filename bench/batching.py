"""Dynamic batching on versus off, for a compute-bound ONNX model at high concurrency.

A wide MLP (256 -> 3072 -> 3072 -> 256, ~0.5 ms per batch-1 run on one core) is served by
modelyard twice: without ``dynamic_batching`` (every request is its own execution) and with
``dynamic_batching {}`` (no queue delay: whatever queued while the model was busy runs as
one batch). The same closed-loop load generator as ``run.py`` drives each at the given
concurrency (binary tensors); in-process onnxruntime at batch 1 and at the batch sizes the
server formed gives the ceiling. Statistics from the server show the batches it made.

    python bench/batching.py                      # c=64, 10 s, 2 runs, median shown
    python bench/batching.py --concurrency 16,64 --duration 5 --output bench/results/batching.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from tests.factories.onnx_models import mlp  # noqa: E402

from loadgen import run_cell  # noqa: E402
from servers import free_port  # noqa: E402
from workloads import Workload, _io  # noqa: E402

SIZES = (256, 3072, 3072, 256)
MAX_BATCH = 64


def _workload() -> Workload:
    rng = np.random.default_rng(7)
    w = Workload(
        name="wide_mlp",
        inputs={"INPUT": rng.standard_normal((1, SIZES[0])).astype(np.float32)},
        outputs=("OUTPUT",),
        config_body=f"max_batch_size: {MAX_BATCH}\n"
        + _io("input", "INPUT", str(SIZES[0]))
        + _io("output", "OUTPUT", str(SIZES[-1])),
    )
    w.__dict__["onnx_bytes"] = bytes(mlp(SIZES))
    return w


def _serve(repo: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelyard",
                "serve",
                "--model-repository",
                str(repo),
                "--http-port",
                str(port),
                "--http-address",
                "127.0.0.1",
                "--metrics-port",
                "0",
                "--model-control-mode",
                "none",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:]) from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server not ready")


def _stats(port: int) -> dict[str, object]:
    url = f"http://127.0.0.1:{port}/v2/models/wide_mlp/stats"
    with urllib.request.urlopen(url, timeout=10) as r:
        return dict(json.loads(r.read())["model_stats"][0])


def _inprocess(w: Workload, batch: int, seconds: float = 1.0) -> float:
    """Rows per second of session.run at this batch size, with the server's session
    settings (onnxruntime's default threads); best of three runs, the machine is shared."""
    import onnxruntime as ort

    sess = ort.InferenceSession(w.onnx_bytes, providers=["CPUExecutionProvider"])
    x = np.repeat(w.inputs["INPUT"], batch, axis=0)
    for _ in range(3):
        sess.run(None, {"INPUT": x})
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            sess.run(None, {"INPUT": x})
            n += 1
        best = max(best, n * batch / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", default="64")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--output", type=Path)
    a = p.parse_args(argv)
    levels = [int(c) for c in a.concurrency.split(",")]
    w = _workload()
    work = Path(tempfile.mkdtemp(prefix="modelyard-batching-"))
    rows = []
    batch_sizes: dict[str, list[int]] = {}
    for label, extra in (("off", ""), ("on", "dynamic_batching { }\n")):
        repo = work / label
        (repo / "wide_mlp" / "1").mkdir(parents=True)
        (repo / "wide_mlp" / "config.pbtxt").write_text(
            'name: "wide_mlp"\nplatform: "onnxruntime_onnx"\n' + w.config_body + extra
        )
        (repo / "wide_mlp" / "1" / "model.onnx").write_bytes(w.onnx_bytes)
        port = free_port()
        proc = _serve(repo, port, work / f"{label}.log")
        try:
            problem = w.check(port, "binary")
            if problem:
                raise RuntimeError(f"batching {label}: {problem}")
            request = w.http_request("binary", port)
            for c in levels:
                runs = []
                for i in range(a.repeats):
                    res, err = run_cell(port, request, c, a.duration)
                    if res.errors:
                        raise RuntimeError(f"batching {label} c={c}: {res.errors} errors: {err}")
                    print(
                        f"batching {label:3} c={c:<3} run {i + 1}: {res.rps:8.0f} req/s "
                        f"p50 {res.p50_ms:6.2f} ms p99 {res.p99_ms:6.2f} ms",
                        file=sys.stderr,
                    )
                    runs.append(res)
                rps = statistics.median(r.rps for r in runs)
                p99 = statistics.median(r.p99_ms for r in runs)
                p50 = statistics.median(r.p50_ms for r in runs)
                rows.append((label, c, rps, p50, p99))
            stats = _stats(port)
            batch_sizes[label] = [int(b["batch_size"]) for b in stats["batch_stats"]]  # type: ignore[index]
            ratio = stats["inference_count"] / max(1, int(stats["execution_count"]))  # type: ignore[operator]
            batch_sizes[label + "_mean"] = [round(ratio)]
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=20)
    mean_batch = batch_sizes["on_mean"][0]
    inproc_1 = _inprocess(w, 1)
    inproc_b = _inprocess(w, max(1, mean_batch))
    lines = [
        "## Dynamic batching: wide MLP (256-3072-3072-256), binary tensors",
        "",
        f"{os.cpu_count()} CPUs shared with the load generator; closed loop, "
        f"{a.duration:g} s per run, median of {a.repeats}.",
        "",
        "| batching | concurrency | req/s | p50 ms | p99 ms | vs off |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    off = {c: rps for label, c, rps, _, _ in rows if label == "off"}
    for label, c, rps, p50, p99 in rows:
        lines.append(
            f"| {label} | {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {rps / off[c]:.2f}x |"
        )
    lines += [
        "",
        f"Server statistics with batching on: mean executed batch {mean_batch} "
        f"(sizes seen: {min(batch_sizes['on'])}..{max(batch_sizes['on'])}); off: "
        f"{sorted(set(batch_sizes['off']))}.",
        "",
        "| in-process onnxruntime | rows/s |",
        "| --- | --- |",
        f"| batch 1 | {inproc_1:,.0f} |",
        f"| batch {mean_batch} | {inproc_b:,.0f} |",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(table)


if __name__ == "__main__":
    main()
