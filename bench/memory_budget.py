"""The memory budget under concurrent, skewed traffic: issue 13's scenario at its real size.

Builds 30 ONNX MLPs of about 17 MB each (64-2048-2048-10) in a local folder, starts
``modelyard serve --memory-budget 120MiB`` (about two fit), loads and unloads a small model
so the runtime is initialised, then sends 240 requests drawn from a seeded Zipf(1.3) trace
over the models from 8 concurrent clients. The server's process-tree RSS is sampled from
outside with psutil every 5 ms. Prints failures (with their texts), the peak RSS above the
baseline, evictions, loads, and the hottest models' learned sizes
(``modelyard_model_memory_estimate_bytes``); they must stay near the first measurement.

    python bench/memory_budget.py [--models 30] [--requests 240] [--budget 120MiB]

The integration test (tests/integration/test_memory_budget.py) runs the same shape at a
size that takes seconds; this is the size the defect was seen at.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.factories.onnx_models import mlp, write_model

from modelyard.testing import running_server


def _rss_tree(pid: int) -> int:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return int(total)


def _estimates(base_url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith("modelyard_model_memory_estimate_bytes{"):
            name = line.split('model="', 1)[1].split('"', 1)[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


def _metric(base_url: str, name: str) -> float:
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--budget", default="120MiB")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    body = {"inputs": [{"name": "INPUT", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        for i in range(args.models):
            write_model(repo, f"m{i}", mlp((64, 2048, 2048, 10), seed=i), None)
        write_model(repo, "warm", mlp(), None)
        with running_server(repo, ["--memory-budget", args.budget]) as server:
            url = server.base_url
            httpx.post(f"{url}/v2/models/warm/infer", json=body, timeout=120)
            httpx.post(f"{url}/v2/repository/models/warm/unload", timeout=120)
            base = _rss_tree(server.process.pid)
            rng = np.random.default_rng(7)
            draws = rng.zipf(1.3, args.requests * 4)
            names = [f"m{int(i) - 1}" for i in draws if i <= args.models][: args.requests]
            peak, stop = 0, threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, _rss_tree(server.process.pid) - base)
                    stop.wait(0.005)

            sampler = threading.Thread(target=sample)
            sampler.start()
            start = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                responses = list(
                    pool.map(
                        lambda n: httpx.post(f"{url}/v2/models/{n}/infer", json=body, timeout=300),
                        names,
                    )
                )
            seconds = time.monotonic() - start
            stop.set()
            sampler.join()
            failed = [r for r in responses if r.status_code != 200]
            print(f"requests: {len(names)} in {seconds:.1f} s, failed: {len(failed)}")
            for text in sorted({r.text[:200] for r in failed})[:5]:
                print(f"  {text}")
            print(f"peak RSS above the baseline: {peak / 2**20:.0f} MiB (budget {args.budget})")
            print(f"evictions: {_metric(url, 'modelyard_model_evictions_total'):.0f}")
            print(f"loads: {_metric(url, 'modelyard_model_load_seconds_count'):.0f}")
            sizes = _estimates(url)
            for name, _ in sorted(((n, names.count(n)) for n in set(names)), key=lambda x: -x[1])[
                :3
            ]:
                print(
                    f"learned size of {name} ({names.count(name)} requests): "
                    f"{sizes.get(name, 0) / 2**20:.1f} MiB"
                )


if __name__ == "__main__":
    main()
