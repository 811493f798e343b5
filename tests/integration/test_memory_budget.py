"""The memory budget under concurrent traffic, against the real server process.

More models than fit, eight concurrent clients (boto3's ``invoke_endpoint`` and v2 HTTP),
skewed traffic: every request is served, each model's learned size stays what a clean load
measured, and the server's resident memory (sampled from outside with psutil, over its
process tree) stays within the budget plus the runtime's baseline.

The models are ``working_memory`` ONNX models: small files, a large onnxruntime arena, so
what a load measures (not the prediction from the file sizes) is what the books hold.
"""

from __future__ import annotations

import io
import itertools
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import orjson
import psutil
import pytest
from botocore.config import Config

from modelyard.testing import RunningServer, running_server
from tests.factories.onnx_models import mlp, slow, working_memory, write_model
from tests.factories.python_models import write_python_model
from tests.integration.conftest import SLOW
from tests.integration.s3_server import MotoServer
from tests.integration.test_on_demand import _metrics, _mlp_body, books_within
from tests.integration.traffic import rss_tree

MIB = 2**20
BODY = _mlp_body()


def _artifact(name: str, model: bytes) -> bytes:
    """``<name>_1.tar.gz`` as the deploy loop packs it (auto-completed: no config)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{name}/1/model.onnx")
        info.size = len(model)
        tar.addfile(info, io.BytesIO(model))
    return buf.getvalue()


def _runtime_client(server: RunningServer) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.base_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=120),
    )


def estimates(server: RunningServer) -> dict[str, float]:
    """Each model's learned size as the server books it (``model -> bytes``)."""
    prefix = "modelyard_model_memory_estimate_bytes|"
    return {
        k[len(prefix) :]: v for k, v in _metrics(server.base_url).items() if k.startswith(prefix)
    }


class PeakRss:
    """The server's process-tree RSS, sampled from outside every 5 ms while in use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_tree(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_tree(self.pid))
            self._stop.wait(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def s3_server(moto_server: MotoServer, s3: Any, bucket: str) -> Iterator[RunningServer]:
    for i in range(12):
        key = f"models/m{i}_1.tar.gz"
        s3.put_object(Bucket=bucket, Key=key, Body=_artifact(f"m{i}", working_memory(seed=i)))
    for i in range(8):
        key = f"models/warm{i}_1.tar.gz"
        s3.put_object(Bucket=bucket, Key=key, Body=_artifact(f"warm{i}", mlp(seed=i)))
    url = f"s3://{moto_server.host_port}/{bucket}/models"
    env = {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    args = ["--memory-budget", "80MiB", "--load-wait-timeout", "120"]
    with running_server(url, args, env=env) as server:
        yield server


def test_more_models_than_fit_eight_clients_skewed_no_failure(s3_server: RunningServer) -> None:
    server, budget = s3_server, 80 * MIB
    # the runtime's baseline: the server once it has downloaded and loaded models eight at a
    # time (interpreter, onnxruntime, the S3 client's thread pools and their malloc arenas)
    with httpx.Client(base_url=server.base_url, timeout=120) as http, ThreadPoolExecutor(8) as pool:
        warm = [f"warm{i}" for i in range(8)]
        codes = pool.map(lambda m: http.post(f"/v2/models/{m}/infer", json=BODY).status_code, warm)
        assert list(codes) == [200] * 8
        for name in warm:
            http.post(f"/v2/repository/models/{name}/unload")
    base = rss_tree(server.process.pid)
    rng = np.random.default_rng(3)
    names = [f"m{int(i) - 1}" for i in rng.zipf(1.3, 600) if i <= 12][:240]
    runtime = _runtime_client(server)
    body = orjson.dumps(BODY)

    def request(job: tuple[int, str]) -> str:
        i, name = job
        if i % 2:
            r = httpx.post(f"{server.base_url}/v2/models/{name}/infer", json=BODY, timeout=120)
            return "ok" if r.status_code == 200 else f"v2 {r.status_code}: {r.text}"
        try:
            runtime.invoke_endpoint(
                EndpointName="modelyard",
                TargetModel=f"{name}_1.tar.gz",
                Body=body,
                ContentType="application/json",
            )
        except runtime.exceptions.ClientError as exc:
            return f"invoke_endpoint: {exc.response}"
        return "ok"

    with PeakRss(server.process.pid) as rss, ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(request, enumerate(names)))
    failed = [o for o in outcomes if o != "ok"]
    assert not failed, f"{len(failed)} of {len(names)} failed, e.g. {failed[:3]}"
    m = _metrics(server.base_url)
    assert m["modelyard_model_evictions_total"] > 0  # more models than fit: it did evict
    assert books_within(server.base_url, budget)
    # beyond the budget only what lives while a load or a download runs: a session being
    # built and warmed up, concurrent downloads' buffers, request buffers
    assert rss.peak - base <= budget + 48 * MIB, (rss.peak - base) / MIB


def test_learned_sizes_hold_through_ten_reload_cycles_under_traffic(tmp_path: Path) -> None:
    """Each model's size stays within 10% of its first clean measurement while other loads,
    evictions and inferences run at the same time (they are not its memory)."""
    names = [f"m{i}" for i in range(3)]
    for i, name in enumerate(names):
        write_model(tmp_path, name, working_memory(seed=i), None)
    write_model(tmp_path, "warm", mlp(), None)
    with (
        running_server(tmp_path, ["--memory-budget", "80MiB"]) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as http,
    ):
        assert http.post("/v2/models/warm/infer", json=BODY).status_code == 200
        http.post("/v2/repository/models/warm/unload")
        first = {}
        for name in names:  # one at a time, nothing else running: clean measurements
            assert http.post(f"/v2/models/{name}/infer", json=BODY).status_code == 200
            first[name] = estimates(server)[name]
            http.post(f"/v2/repository/models/{name}/unload")
        loads_before = _metrics(server.base_url)["modelyard_model_load_seconds_count"]
        stop = threading.Event()
        codes: list[int] = []

        def traffic(offset: int) -> None:
            with httpx.Client(base_url=server.base_url, timeout=120) as client:
                for k in itertools.count(offset):
                    if stop.is_set():
                        return
                    r = client.post(f"/v2/models/{names[k % 3]}/infer", json=BODY)
                    codes.append(r.status_code)

        threads = [threading.Thread(target=traffic, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        loads = 0.0
        try:
            # each round asks for every model again: two fit, three cycle, so each round
            # reloads models; go on until there were ten reloads per model
            for _ in range(100):
                for name in names:
                    assert http.post(f"/v2/models/{name}/infer", json=BODY).status_code == 200
                m = _metrics(server.base_url)
                loads = m["modelyard_model_load_seconds_count"] - loads_before
                if loads >= 3 * 10:
                    break
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert loads >= 3 * 10
        assert set(codes) == {200}
        now = estimates(server)
        for name in names:
            assert abs(now[name] - first[name]) <= 0.1 * first[name], (name, first, now)
            assert first[name] > 20 * MIB  # measured (the arena), not the file-size guess


# -- Python models: worker processes are measured as what they are, separate processes ----

# allocates (and touches) MB megabytes in initialize, and GROW more in each execute
HOG_PY = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.held = [bytearray(b"\\x01") * ({mb} << 20)]

    def execute(self, requests):
        responses = []
        for request in requests:
            self.held.append(bytearray(b"\\x01") * ({grow} << 20))
            size = sum(len(b) for b in self.held)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("HELD", np.array([size], dtype=np.int64))]))
        return responses
"""

HOG_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "X", data_type: TYPE_FP32, dims: [ 1 ] }} ]
output [ {{ name: "HELD", data_type: TYPE_INT64, dims: [ 1 ] }} ]
"""
X = {"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [0.0]}]}


def _hog(root: Path, name: str, mb: int, grow: int) -> None:
    write_python_model(root, name, HOG_PY.format(mb=mb, grow=grow), HOG_CONFIG.format(name=name))


def _workers(server: RunningServer) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children(recursive=True)


def test_a_python_model_allocating_past_the_budget_in_initialize_is_refused(
    tmp_path: Path,
) -> None:
    _hog(tmp_path, "hog", mb=400, grow=0)
    _hog(tmp_path, "small", mb=1, grow=0)
    with (
        running_server(tmp_path, ["--memory-budget", "300MiB"]) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as http,
    ):
        base = rss_tree(server.process.pid)
        r = http.post("/v2/models/hog/infer", json=X)
        assert r.status_code == 400, r.text
        message = r.json()["error"]
        assert "more than the whole memory budget of 314572800 bytes" in message, message
        assert "worker" in message
        again = http.post("/v2/models/hog/infer", json=X)  # refused at once, same figures
        assert again.status_code == 400 and again.json()["error"] == message
        assert _workers(server) == []  # its worker is gone: nothing holds the 400 MB
        assert rss_tree(server.process.pid) - base < 300 * MIB
        assert http.post("/v2/models/small/infer", json=X).status_code == 200  # serving on
        index = {row["name"]: row for row in http.post("/v2/repository/index").json()}
        assert index["small"]["state"] == "READY"


def test_a_python_model_growing_in_execute_past_the_budget_is_unloaded(tmp_path: Path) -> None:
    _hog(tmp_path, "grower", mb=1, grow=60)
    with (
        running_server(tmp_path, ["--memory-budget", "300MiB"]) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as http,
    ):
        base = rss_tree(server.process.pid)
        codes = []
        for _ in range(12):  # 60 MB a request: past the budget after five or six
            r = http.post("/v2/models/grower/infer", json=X)
            codes.append(r.status_code)
            if r.status_code != 200:
                break
            # the server samples worker memory continuously; wait for it to see this one
            books = 0.0
            for _ in range(100):
                books = estimates(server).get("grower", 0.0)
                if books >= r.json()["outputs"][0]["data"][0]:
                    break
                time.sleep(0.05)
        assert codes[0] == 200 and codes[-1] == 400, codes
        message = r.json()["error"]
        assert "more than the whole memory budget of 314572800 bytes" in message, message
        assert "worker processes" in message
        deadline = time.monotonic() + 30
        while _workers(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _workers(server) == []  # unloaded: its memory is given back
        assert rss_tree(server.process.pid) - base < 300 * MIB


# -- a model that fits waits for busy residents: 503/429 after the wait, never 507 ---------


def _trips(n: int) -> dict[str, Any]:
    return {"inputs": [{"name": "TRIPS", "shape": [1, 1], "datatype": "INT64", "data": [n]}]}


def _busy_repository(root: Path) -> None:
    write_model(root, "warm", mlp(), None)
    write_model(root, "slow", slow(), SLOW)
    write_model(root, "wide", working_memory(), None)


def _until_in_flight(server: RunningServer, model: str) -> None:
    key = f"nv_inference_pending_request_count|{model}|1"
    for _ in range(2000):
        if _metrics(server.base_url).get(key, 0) >= 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"no request of '{model}' in flight")


def _prepare(http: httpx.Client) -> None:
    """Runtime warmed, 'wide' measured once (then unloaded), 'slow' loaded: the two do not
    fit together in the budget, each fits alone."""
    for name, body in (("warm", BODY), ("wide", BODY)):
        for _ in range(600):
            r = http.post(f"/v2/models/{name}/infer", json=body)
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.status_code == 200, r.text
        http.post(f"/v2/repository/models/{name}/unload")
    for _ in range(600):
        if http.post("/v2/models/slow/infer", json=_trips(1)).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("'slow' did not load")


def test_a_model_that_fits_waits_while_every_resident_is_busy(tmp_path: Path) -> None:
    _busy_repository(tmp_path)
    with (
        running_server(tmp_path, ["--memory-budget", "40MiB"]) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as http,
        ThreadPoolExecutor(1) as pool,
    ):
        _prepare(http)
        busy = pool.submit(http.post, "/v2/models/slow/infer", json=_trips(1500))
        _until_in_flight(server, "slow")
        r = http.post("/v2/models/wide/infer", json=BODY)  # waits for 'slow' to go idle
        assert r.status_code == 200, r.text
        assert busy.result().status_code == 200  # never pulled from under its request
        assert _metrics(server.base_url)["modelyard_model_evictions_total"] >= 1


def test_the_wait_for_busy_residents_ends_in_503_not_507(tmp_path: Path) -> None:
    _busy_repository(tmp_path)
    # (the container face's answer, 503 and not 507, is test_sagemaker's mapping test)
    args = ["--memory-budget", "40MiB", "--load-wait-timeout", "0.25"]
    with (
        running_server(tmp_path, args) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as http,
        ThreadPoolExecutor(1) as pool,
    ):
        _prepare(http)
        runtime = _runtime_client(server)
        busy = pool.submit(http.post, "/v2/models/slow/infer", json=_trips(30000))
        _until_in_flight(server, "slow")
        r = http.post("/v2/models/wide/infer", json=BODY)
        assert r.status_code == 503, r.text
        assert "--load-wait-timeout" in r.json()["error"] and "retry" in r.json()["error"]
        with pytest.raises(runtime.exceptions.ModelNotReadyException):
            runtime.invoke_endpoint(
                EndpointName="modelyard",
                TargetModel="wide_1.tar.gz",
                Body=orjson.dumps(BODY),
                ContentType="application/json",
            )
        assert busy.result().status_code == 200
        for _ in range(600):  # once 'slow' is idle, 'wide' loads
            r = http.post("/v2/models/wide/infer", json=BODY)
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.status_code == 200, r.text


def test_a_model_measured_larger_than_the_budget_is_refused_with_the_same_figures(
    tmp_path: Path,
) -> None:
    """Its files predict it fits (8 MiB); its load measures ~34 MiB against 30 MiB: it is
    unloaded again, and that request and every later one say so, with the figures."""
    write_model(tmp_path, "wide", working_memory(), None)
    write_model(tmp_path, "small", mlp(), None)
    with (
        running_server(tmp_path, ["--memory-budget", "30MiB"]) as server,
        httpx.Client(base_url=server.base_url, timeout=120) as http,
    ):
        first = http.post("/v2/models/wide/infer", json=BODY)
        assert first.status_code == 400, first.text
        message = first.json()["error"]
        assert "measured when it was loaded" in message, message
        assert "more than the whole memory budget of 31457280 bytes" in message
        for _ in range(3):
            again = http.post("/v2/models/wide/infer", json=BODY)
            assert (again.status_code, again.json()["error"]) == (400, message)
        rows = [r for r in http.post("/v2/repository/index").json() if r["name"] == "wide"]
        assert rows and rows[0]["state"] == "UNAVAILABLE" and rows[0]["reason"] == message
        assert http.post("/v2/models/small/infer", json=BODY).status_code == 200
        m = _metrics(server.base_url)
        assert m["modelyard_model_load_seconds_count"] == 2  # 'wide' was not loaded again
