"""Tree models through the server beside XGBoost in-process: prints a markdown table.

    python bench/trees.py [--duration 5] [--repeats 1] [--concurrency 1,16] [--threads 1,-1]

One XGBoost classifier (100 trees, depth 6, 32 features, trained on 5,000 seeded rows) is
served by ``modelyard serve`` from a Triton FIL repository (``model_type: xgboost_json``,
``predict_proba: true``). The load generator of ``bench/run.py`` (``loadgen.py``) sends the
same request over and over, at batch 1 and 64, in both v2 encodings; each cell is a fresh
load-generator process, closed loop, one request in flight per connection. Beside it, the
same rows go through XGBoost in this process, on one thread of Python: ``inplace_predict``
and the scikit-learn style ``predict_proba`` most users call (modelyard calls the C function
``inplace_predict`` ends in). The server runs once per ``cpu_nthread`` in ``--threads``
(1, modelyard's default; -1, Triton's: every core).
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from tests.factories.trees import TreeCase, rows  # noqa: E402

from loadgen import CellResult, run_cell  # noqa: E402
from servers import Modelyard  # noqa: E402

CASE = TreeCase(
    "xgb100",
    "xgboost",
    "binary",
    "xgboost_json",
    predict_proba=True,
    trees=100,
    depth=6,
    features=32,
    max_batch_size=1024,
    train_rows=5000,
)
BATCHES = (1, 64)
ENCODINGS = ("binary", "json")


class TreeServer(Modelyard):
    """modelyard serving the one tree model (the ONNX workloads of bench/run.py are left out)."""

    model: Any = None
    nthread: int = 1

    def prepare(self, repo: Path, workloads: list[Any]) -> None:
        dataclasses.replace(CASE, cpu_nthread=self.nthread).write(repo, self.model)


def body(x: Any, encoding: str) -> tuple[bytes, dict[str, str]]:
    if encoding == "json":
        doc = {"inputs": [_tensor(x) | {"data": x.ravel().tolist()}]}
        return orjson.dumps(doc), {"Content-Type": "application/json"}
    head = orjson.dumps(
        {
            "inputs": [_tensor(x) | {"parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "output__0", "parameters": {"binary_data": True}}],
        }
    )
    return head + x.tobytes(), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }


def _tensor(x: Any) -> dict[str, Any]:
    return {"name": "input__0", "datatype": "FP32", "shape": list(x.shape)}


def http_request(x: Any, encoding: str, port: int) -> bytes:
    payload, headers = body(x, encoding)
    lines = [
        f"POST /v2/models/{CASE.name}/infer HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        *(f"{k}: {v}" for k, v in headers.items()),
        f"Content-Length: {len(payload)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def check(port: int, x: Any, expected: Any) -> None:
    """One JSON request (it also loads the model); the answer must be XGBoost's."""
    payload, headers = body(x, "json")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", f"/v2/models/{CASE.name}/infer", payload, headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")
    out = orjson.loads(data)["outputs"][0]
    got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    if not np.allclose(got, expected, rtol=1e-5, atol=1e-6):
        raise RuntimeError("the server's predictions differ from XGBoost's")


def fil_runtime(model: Any) -> Any:
    """The runtime the server builds for the model, loaded here (cpu_nthread 1)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from modelyard.runtimes.base import RuntimeOptions
    from modelyard.runtimes.fil import FilFactory

    repo = Path(tempfile.mkdtemp(prefix="bench-trees-"))
    folder = CASE.write(repo, model)
    config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    return FilFactory().load(config, folder / "1" / "model.fil", RuntimeOptions())


def p50_us(fn: Callable[[], object], seconds: float) -> float:
    for _ in range(100):
        fn()
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=1, help="runs per cell; the median is shown")
    p.add_argument("--concurrency", default="1,16", help="connections, comma-separated")
    p.add_argument("--threads", default="1,-1", help="cpu_nthread values, comma-separated")
    args = p.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    threads = [int(t) for t in args.threads.split(",")]

    import xgboost

    t0 = time.perf_counter()
    model = CASE.train()
    log(f"trained {CASE.trees} trees in {time.perf_counter() - t0:.1f} s")
    booster = model.get_booster()
    inputs = {b: np.nan_to_num(rows(b, CASE.features, seed=b), nan=0.5) for b in BATCHES}

    runtime = fil_runtime(model)
    inproc: dict[int, tuple[float, float, float]] = {}
    for b, x in inputs.items():
        feed = {"input__0": x}
        inproc[b] = (
            p50_us(lambda x=x: booster.inplace_predict(x), 2.0),
            p50_us(lambda x=x: model.predict_proba(x), 2.0),
            p50_us(lambda feed=feed: runtime.infer(feed, ["output__0"]), 2.0),
        )
        log(
            f"in-process batch {b}: inplace_predict {inproc[b][0]:.1f} µs, "
            f"predict_proba {inproc[b][1]:.1f} µs, FilRuntime.infer {inproc[b][2]:.1f} µs"
        )

    cells: dict[tuple[int, int, str, int], list[CellResult]] = {}
    for nthread in threads:
        server = TreeServer()
        server.model, server.nthread = model, nthread
        with tempfile.TemporaryDirectory(prefix="bench-trees-") as tmp:
            server.start(Path(tmp), [])
            try:
                for x in inputs.values():
                    check(server.port, x, CASE.expected(model, x))
                for _ in range(args.repeats):
                    for b, x in inputs.items():
                        for enc in ENCODINGS:
                            request = http_request(x, enc, server.port)
                            for c in concurrency:
                                r, err = run_cell(
                                    server.port, request, c, args.duration, args.warmup
                                )
                                if r.errors:
                                    raise RuntimeError(f"batch {b} {enc} c={c}: {err}")
                                cells.setdefault((nthread, b, enc, c), []).append(r)
                                log(
                                    f"cpu_nthread {nthread:>2} batch {b:>2} {enc:6} c={c:<3} "
                                    f"{r.rps:8.0f} req/s p50 {r.p50_ms:.2f} ms"
                                )
            finally:
                server.stop()

    print(render(args, inproc, cells, concurrency, threads, xgboost.__version__))
    return 0


def _median(results: list[CellResult], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in results)


def _k(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def render(
    args: argparse.Namespace,
    inproc: dict[int, tuple[float, float, float]],
    cells: dict[tuple[int, int, str, int], list[CellResult]],
    concurrency: list[int],
    threads: list[int],
    xgb_version: str,
) -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    head = [
        "| batch | `cpu_nthread` | encoding | "
        + " | ".join(f"server c={c} req/s (rows/s) | c={c} p50 ms" for c in concurrency)
        + " | in-process XGBoost `inplace_predict` calls/s (p50 µs) | in-process XGBoost"
        " `predict_proba` calls/s (p50 µs) | in-process modelyard `FilRuntime.infer` calls/s"
        " (p50 µs) |",
        "| --- | --- | --- | "
        + " | ".join("--- | ---" for _ in concurrency)
        + " | --- | --- | --- |",
    ]
    lines = []
    for b in BATCHES:
        ip, pp, rt = inproc[b]
        for nthread in threads:
            for enc in ENCODINGS:
                row = [str(b), f"{nthread}" + (" (default)" if nthread == 1 else ""), enc]
                for c in concurrency:
                    got = cells[(nthread, b, enc, c)]
                    rps = _median(got, "rps")
                    row += [f"{_k(rps)} ({_k(rps * b)})", f"{_median(got, 'p50_ms'):.2f}"]
                row += [f"{_k(1e6 / t)} ({t:.0f})" for t in (ip, pp, rt)]
                lines.append("| " + " | ".join(row) + " |")
    intro = (
        f"{os.cpu_count()} CPUs ({cpu}), shared with the load generator; Python "
        f"{platform.python_version()}, XGBoost {xgb_version}. "
        f"Model: {CASE.trees} trees, depth {CASE.depth}, {CASE.features} features, binary "
        f"classifier served as `xgboost_json` with `predict_proba: true` (output `[batch, 2]`). "
        f"Closed loop, HTTP/1.1 keep-alive, one request in flight per connection; "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured, median of {args.repeats} "
        "run(s). In-process columns: one Python thread calling back to back on the same "
        "rows, p50 of 2 s: XGBoost with its default threads, and the runtime the server "
        "executes (FIL post-processing included, `cpu_nthread` 1)."
    )
    return intro + "\n\n" + "\n".join(head + lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
