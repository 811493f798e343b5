"""`modelyard loadtest` against the benchmark's load generator, on one server in the same run.

Both drive the same real server (``modelyard serve`` over the benchmark's ``mlp`` model) with
the same request bytes (``modelyard.loadtest.workload.infer_request``, binary tensors) in
closed loop at a fixed concurrency: ``bench/loadgen.py`` (raw asyncio, ~15 µs of CPU a
request) and ``modelyard loadtest --concurrency N``, each in its own process, interleaved
(A B A B ...) so drift on a shared machine hits both alike. Prints each one's median
throughput, latency and client CPU per request, and the ratio loadtest / loadgen: the two
should agree within 10% while neither client is the bottleneck (docs/loadtest.md).

    python bench/loadtest_agreement.py                       # concurrency 8, 3 s, 3 rounds
    python bench/loadtest_agreement.py --concurrency 16 --duration 5 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from loadgen import run_cell
from workloads import ROOT

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.factories.onnx_models import mlp, write_model

from modelyard.loadtest._http import Target
from modelyard.loadtest.workload import generate_inputs, infer_request
from modelyard.testing import running_server

MLP_INPUTS = [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 64]}]


def _loadtest(
    url: str, concurrency: int, duration: float, warmup: float, out: Path
) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "modelyard", "loadtest", "--url", url, "--model", "mlp",
        "--p99-ms", "1e6", "--concurrency", str(concurrency), "--duration", str(duration),
        "--warmup", str(warmup), "--cold-start", "skip", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=duration + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"modelyard loadtest failed:\n{proc.stdout}\n{proc.stderr}")
    step: dict[str, Any] = json.loads(out.read_text())["curve"][0]
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="loadtest-agreement-") as tmp:
        repo = Path(tmp) / "repo"
        write_model(repo, "mlp", mlp(), None)
        with running_server(repo) as server:
            target = Target.from_url(server.base_url)
            tensors = generate_inputs(MLP_INPUTS, np.random.default_rng(0))
            request = infer_request(target, "v2", "mlp", "", tensors, ["OUTPUT"])
            rows: dict[str, list[tuple[float, float, float, float]]] = {
                "loadgen": [],
                "loadtest": [],
            }
            for i in range(a.repeats):
                cell, first_error = run_cell(
                    server.port, request, a.concurrency, a.duration, a.warmup
                )
                if cell.errors:
                    raise RuntimeError(f"bench/loadgen.py saw errors: {first_error}")
                rows["loadgen"].append((cell.rps, cell.p50_ms, cell.p99_ms, cell.client_us_per_req))
                step = _loadtest(
                    server.base_url, a.concurrency, a.duration, a.warmup, Path(tmp) / f"{i}.json"
                )
                if step["errors"]:
                    raise RuntimeError(f"modelyard loadtest saw errors: {step['first_error']}")
                lat = step["latency_ms"]
                rows["loadtest"].append(
                    (
                        step["throughput_rps"],
                        lat["p50"],
                        lat["p99"],
                        step["client"]["cpu_us_per_request"],
                    )
                )
                print(
                    f"round {i + 1}: loadgen {rows['loadgen'][-1][0]:.0f}/s, "
                    f"loadtest {rows['loadtest'][-1][0]:.0f}/s",
                    file=sys.stderr,
                )
    print(f"\nmlp, binary tensors, closed loop at concurrency {a.concurrency}, "
          f"{a.duration:g} s x {a.repeats} rounds (medians)\n")  # fmt: skip
    print("| generator | req/s | p50 ms | p99 ms | client µs/req |")
    print("|---|---:|---:|---:|---:|")
    medians = {}
    for name, values in rows.items():
        med = [statistics.median(v[k] for v in values) for k in range(4)]
        medians[name] = med[0]
        print(f"| {name} | {med[0]:.0f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.0f} |")
    ratio = medians["loadtest"] / medians["loadgen"]
    verdict = "within 10%" if abs(ratio - 1) <= 0.10 else "NOT within 10%"
    print(f"\nthroughput ratio loadtest / loadgen: {ratio:.3f} ({verdict})")


if __name__ == "__main__":
    main()
