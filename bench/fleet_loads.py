"""Measure what the fleet simulation takes as given: load time, resident size and service time
of real models, against their file size, on a real ``modelyard serve``.

ONNX MLPs (64 -> w -> w -> 10, FP32) from about 1 MB to about 250 MB of weights, each written
to a folder repository with its config.pbtxt. The server runs in explicit mode; for each model,
smallest first, after one primer model (so onnxruntime's start-up is not in the first figure):

* load: ``POST /v2/repository/models/<m>/load`` timed until the answer (config, session,
  measurement: what a miss costs once the files are on local disk);
* resident: ``modelyard_model_memory_bytes`` after one inference (the manager measures a model
  again after its first inference), with only this model loaded;
* service: p50 and p99 of ``--requests`` JSON inferences of one row, one at a time;
* then ``/unload``, and the next model.

Prints one row per model and the least-squares fits ``load_s = a + b * MB`` and
``resident_MB = c + d * MB`` that ``bench/fleet_sim.py`` uses (its ``MEASURED`` constants).

    python bench/fleet_loads.py                  # about a minute
    python bench/fleet_loads.py --repeats 3      # loads per model (median)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.factories.onnx_models import mlp  # noqa: E402

from modelyard.testing.server import RunningServer, start_server  # noqa: E402

MB = 1_000_000
CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: 8
input [ {{ name: "INPUT", data_type: TYPE_FP32, dims: [ 64 ] }} ]
output [ {{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ 10 ] }} ]
"""
# hidden widths: weights of about 0.5, 4, 16, 65 and 260 MB
WIDTHS = (300, 1000, 2000, 4000, 8000)


def _post(server: RunningServer, path: str, body: bytes = b"") -> bytes:
    request = urllib.request.Request(server.base_url + path, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=300) as answer:
        return bytes(answer.read())


def _memory(server: RunningServer) -> int:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=30) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith("modelyard_model_memory_bytes "):
            return int(float(line.split()[1]))
    raise RuntimeError("modelyard_model_memory_bytes is missing from /metrics")


def measure(repeats: int, requests: int) -> list[dict[str, float]]:
    body = json.dumps(
        {"inputs": [{"name": "INPUT", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
    ).encode()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-loads-") as tmp:
        repo = Path(tmp)
        names = ["primer", *(f"mlp{w}" for w in WIDTHS)]
        for name, width in zip(names, (64, *WIDTHS), strict=True):
            (repo / name / "1").mkdir(parents=True)
            (repo / name / "1" / "model.onnx").write_bytes(mlp((64, width, width, 10)))
            (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name))
        server = start_server(repo, ["--model-control-mode", "explicit"])
        try:
            _post(server, "/v2/repository/models/primer/load")
            _post(server, "/v2/models/primer/infer", body)
            _post(server, "/v2/repository/models/primer/unload")
            for name in names[1:]:
                file_mb = (repo / name / "1" / "model.onnx").stat().st_size / MB
                loads, resident = [], 0
                for _ in range(repeats):
                    start = time.perf_counter()
                    _post(server, f"/v2/repository/models/{name}/load")
                    loads.append(time.perf_counter() - start)
                    _post(server, f"/v2/models/{name}/infer", body)
                    resident = _memory(server)
                    times = []
                    for _ in range(requests):
                        start = time.perf_counter()
                        _post(server, f"/v2/models/{name}/infer", body)
                        times.append(time.perf_counter() - start)
                    _post(server, f"/v2/repository/models/{name}/unload")
                times.sort()
                rows.append(
                    {
                        "file_mb": file_mb,
                        "load_s": statistics.median(loads),
                        "resident_mb": resident / MB,
                        "service_p50_ms": 1000 * times[len(times) // 2],
                        "service_p99_ms": 1000 * times[int(0.99 * (len(times) - 1))],
                    }
                )
        finally:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="loads per model (median)")
    parser.add_argument("--requests", type=int, default=100, help="inferences per model")
    args = parser.parse_args()
    rows = measure(args.repeats, args.requests)
    print("| model.onnx MB | load s | resident MB | service p50 ms | service p99 ms |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['file_mb']:.1f} | {r['load_s']:.3f} | {r['resident_mb']:.1f} "
            f"| {r['service_p50_ms']:.2f} | {r['service_p99_ms']:.2f} |"
        )
    x = np.array([r["file_mb"] for r in rows])
    b, a = np.polyfit(x, [r["load_s"] for r in rows], 1)
    d, c = np.polyfit(x, [r["resident_mb"] for r in rows], 1)
    f, e = np.polyfit(x, [r["service_p50_ms"] for r in rows], 1)
    print(f"\nload_s = {a:.4f} + {b:.5f} * MB")
    print(f"resident_MB = {c:.2f} + {d:.3f} * MB")
    print(f"service_p50_ms = {e:.3f} + {f:.4f} * MB")


if __name__ == "__main__":
    main()
