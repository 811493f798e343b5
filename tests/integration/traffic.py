"""Shared by the many-models tests: concurrent traffic while memory is sampled from outside."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil

from modelyard.testing import RunningServer


def rss_tree(pid: int) -> int:
    """Resident memory of a process and all its children (model worker processes too)."""
    proc = psutil.Process(pid)
    return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))


def traffic_with_peak_rss(
    server: RunningServer, names: Sequence[str], body: dict[str, Any], workers: int = 8
) -> tuple[list[int], int]:
    """POST ``body`` to each model in ``names`` from ``workers`` threads; return the status
    codes in order and the peak RSS of the server's process tree, sampled every 5 ms."""
    peak = rss_tree(server.process.pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_tree(server.process.pid))
            time.sleep(0.005)

    def post(model: str) -> int:
        url = f"{server.base_url}/v2/models/{model}/infer"
        return httpx.post(url, json=body, timeout=60).status_code

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(workers) as pool:
            codes = list(pool.map(post, names))
    finally:
        stop.set()
        sampler.join()
    return codes, peak


def wait_in_flight(server: RunningServer, model: str, count: int, timeout: float = 60.0) -> None:
    """Block until ``count`` requests for ``model`` are inside the server (queued or running),
    as its ``nv_inference_pending_request_count`` says: a fixed sleep instead would race on
    a loaded machine (the request may not have arrived yet)."""
    deadline = time.monotonic() + timeout
    prefix = f'nv_inference_pending_request_count{{model="{model}",'
    while True:
        text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
        pending = sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith(prefix)
        )
        if pending >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{model}: {pending} of {count} requests arrived in {timeout} s")
        time.sleep(0.02)
