"""On-demand serving: one load per model however many ask, a memory budget held from outside,
new versions picked up without a failed request, questions answered without loading."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelyard.testing import running_server
from tests.factories.onnx_models import add_sub, mlp, write_model
from tests.integration.traffic import rss_tree, traffic_with_peak_rss

WIDE = (64, 1024, 1024, 10)  # ~4.5 MB of weights: a model the budget notices


def _mlp_body(n: int = 1) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "INPUT",
                "shape": [n, 64],
                "datatype": "FP32",
                "data": np.linspace(0, 1, 64 * n).tolist(),
            }
        ]
    }


def _metrics(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics").text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels or set(sample.labels) <= {"model", "version"}:
                key = sample.name + "".join(f"|{v}" for v in sample.labels.values())
                out[key] = sample.value
    return out


def books_within(base_url: str, budget: int, seconds: float = 3.0) -> bool:
    """The server's own books (modelyard_model_memory_bytes) within the budget: a load that
    measured more than its prediction is balanced by evictions as models go idle."""
    deadline = time.monotonic() + seconds
    while _metrics(base_url)["modelyard_model_memory_bytes"] > budget:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_concurrent_first_requests_share_one_load(tmp_path: Path) -> None:
    write_model(tmp_path, "mlp", mlp(WIDE), None)
    with running_server(tmp_path) as server:
        index = httpx.post(f"{server.base_url}/v2/repository/index").json()
        assert index == [{"name": "mlp"}]  # nothing loaded at start
        with ThreadPoolExecutor(32) as pool:
            codes = list(
                pool.map(
                    lambda _: (
                        httpx.post(
                            f"{server.base_url}/v2/models/mlp/infer", json=_mlp_body(), timeout=60
                        ).status_code
                    ),
                    range(32),
                )
            )
        assert codes == [200] * 32
        m = _metrics(server.base_url)
        assert m["modelyard_model_load_seconds_count"] == 1
        assert m["modelyard_model_cache_misses_total"] + m["modelyard_model_cache_hits_total"] == 32


def test_metadata_config_and_ready_without_loading(tmp_path: Path) -> None:
    write_model(tmp_path, "mlp", mlp(), None)
    with running_server(tmp_path) as server, httpx.Client(base_url=server.base_url) as http:
        assert http.get("/v2/models/mlp/ready").status_code == 200
        meta = http.get("/v2/models/mlp").json()
        assert meta["inputs"] == [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 64]}]
        assert meta["versions"] == ["1"]
        assert http.get("/v2/models/mlp/config").json()["max_batch_size"] == 4
        assert http.post("/v2/repository/index").json() == [{"name": "mlp"}]  # still not loaded
        assert _metrics(server.base_url)["modelyard_loaded_models"] == 0
        assert http.get("/v2/models/nope/ready").status_code == 400


def test_load_wait_timeout_answers_503_while_the_load_goes_on(tmp_path: Path) -> None:
    write_model(tmp_path, "mlp", mlp(WIDE), None)
    with running_server(tmp_path, ["--load-wait-timeout", "0.001"]) as server:
        r = httpx.post(f"{server.base_url}/v2/models/mlp/infer", json=_mlp_body())
        assert r.status_code == 503
        assert "still loading" in r.json()["error"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = httpx.post(f"{server.base_url}/v2/models/mlp/infer", json=_mlp_body())
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.status_code == 200


def test_model_bigger_than_the_budget_fails_at_once(tmp_path: Path) -> None:
    write_model(tmp_path, "big", mlp(WIDE), None)
    write_model(tmp_path, "small", add_sub(), None)
    with running_server(tmp_path, ["--memory-budget", "2MiB"]) as server:
        r = httpx.post(f"{server.base_url}/v2/models/big/infer", json=_mlp_body(), timeout=30)
        assert r.status_code == 400  # at once: waiting for memory would end in 503
        assert "more than the whole memory budget of 2097152 bytes" in r.json()["error"]


def test_more_models_than_fit_stay_within_the_budget(tmp_path: Path) -> None:
    n_models, budget = 12, 64 * 2**20
    for i in range(n_models):
        write_model(tmp_path, f"m{i}", mlp(WIDE, seed=i), None)
    write_model(tmp_path, "warm", mlp(), None)
    with running_server(tmp_path, ["--memory-budget", str(budget)]) as server:
        http = httpx.Client(base_url=server.base_url, timeout=60)
        assert http.post("/v2/models/warm/infer", json=_mlp_body()).status_code == 200
        base = rss_tree(server.process.pid)  # interpreter + onnxruntime, before the budget
        rng = np.random.default_rng(0)
        names = [f"m{int(i)}" for i in rng.zipf(1.3, 300) % n_models]
        codes, peak = traffic_with_peak_rss(server, names, _mlp_body())
        assert codes == [200] * len(names)
        m = _metrics(server.base_url)
        assert m["modelyard_model_evictions_total"] > 0
        assert books_within(server.base_url, budget)
        slack = 48 * 2**20  # allocator pages not yet returned, thread stacks, request buffers
        assert peak - base <= budget + slack, (peak - base) / 2**20
        http.close()


def test_new_version_is_picked_up_without_a_failed_request(tmp_path: Path) -> None:
    write_model(tmp_path, "mlp", mlp(seed=1), None, version=1)
    codes: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()
    with running_server(tmp_path, ["--repository-poll-secs", "0.2"]) as server:

        def traffic() -> None:
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/v2/models/mlp/infer", json=_mlp_body())
                    codes.append(r.status_code)
                    if r.status_code == 200:
                        versions.add(r.json()["model_version"])

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            time.sleep(0.3)
            staging = tmp_path / "staging"
            write_model(staging, "mlp", mlp(seed=2), None, version=2)
            shutil.move(str(staging / "mlp" / "2"), str(tmp_path / "mlp" / "2"))
            # a request naming the new version finds it at once, before any poll
            r = httpx.post(
                f"{server.base_url}/v2/models/mlp/versions/2/infer", json=_mlp_body(), timeout=30
            )
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 10
            while "2" not in versions and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join()
    assert "2" in versions  # the default moved to the new version
    assert set(codes) == {200}


@pytest.mark.parametrize("mode", ["poll"])
def test_poll_mode_loads_new_models(tmp_path: Path, mode: str) -> None:
    write_model(tmp_path, "a", add_sub(), None)
    with running_server(
        tmp_path, [f"--model-control-mode={mode}", "--repository-poll-secs=0.2"]
    ) as server:
        assert httpx.get(f"{server.base_url}/v2/models/a/ready").status_code == 200
        write_model(tmp_path, "b", add_sub(), None)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if httpx.get(f"{server.base_url}/v2/models/b/ready").status_code == 200:
                break
            time.sleep(0.05)
        index = {r["name"]: r for r in httpx.post(f"{server.base_url}/v2/repository/index").json()}
        assert index["b"]["state"] == "READY"
        shutil.rmtree(tmp_path / "a")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if httpx.get(f"{server.base_url}/v2/models/a/ready").status_code == 400:
                break
            time.sleep(0.05)
        assert httpx.get(f"{server.base_url}/v2/models/a/ready").status_code == 400
