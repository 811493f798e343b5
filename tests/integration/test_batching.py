"""Dynamic batching, queue policy and warm-up, seen from outside through statistics,
metrics and real clients (a real server; ONNX and Python models built here)."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from onnx import TensorProto

from modelyard.testing import RunningServer, running_server
from tests.factories.onnx_models import identity, write_model
from tests.factories.python_models import write_python_model
from tests.integration.traffic import wait_in_flight

BATCHED = """
name: "batched"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
dynamic_batching { preferred_batch_size: [ 8 ] max_queue_delay_microseconds: 3000000 }
"""

# sleeps SECONDS of the first request, answers every request with the batch it was part of
SLOW_BATCH_PY = """import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.executions = 0

    def execute(self, requests):
        self.executions += 1
        seconds = pb_utils.get_input_tensor_by_name(requests[0], "SECONDS").as_numpy()
        time.sleep(float(seconds.reshape(-1)[0]))
        out = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "SECONDS").as_numpy().shape[0]
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("SEEN", np.full((rows, 3), [len(requests), rows,
                                                          self.executions], dtype=np.int64))]))
        return out
"""

SLOW_BATCH_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "SECONDS", data_type: TYPE_FP32, dims: [ 1 ] }} ]
output [ {{ name: "SEEN", data_type: TYPE_INT64, dims: [ 3 ] }} ]
dynamic_batching {{ {batching} }}
{extra}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batching")
    write_model(root, "batched", identity(TensorProto.FLOAT, ["batch", "n"]), BATCHED)
    # a queue delay longer than the client's timeout: only the preferred size can release it
    patient = BATCHED.replace('"batched"', '"patient"').replace("3000000", "600000000")
    write_model(root, "patient", identity(TensorProto.FLOAT, ["batch", "n"]), patient)

    def slow(name: str, batching: str, extra: str = "") -> None:
        write_python_model(
            root,
            name,
            SLOW_BATCH_PY,
            SLOW_BATCH_CONFIG.format(name=name, batching=batching, extra=extra),
        )

    slow("py_batched", "max_queue_delay_microseconds: 300000 preferred_batch_size: [ 3 ]")
    slow(
        "py_stacked",
        "max_queue_delay_microseconds: 300000 preferred_batch_size: [ 3 ]",
        'parameters { key: "modelyard.stacked_batch" value: { string_value: "true" } }',
    )
    slow("py_queue_full", "default_queue_policy { max_queue_size: 1 }")
    slow(
        "py_queue_timeout",
        "default_queue_policy { default_timeout_microseconds: 200000 timeout_action: REJECT }",
    )
    slow(
        "py_warm",
        "",
        'model_warmup [ { name: "w", batch_size: 1, count: 3, inputs { key: "SECONDS" '
        "value: { data_type: TYPE_FP32, dims: [ 1 ], zero_data: true } } } ]",
    )
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with running_server(repo) as srv:
        yield srv


def _identity(server: RunningServer, rows: int, cols: int, model: str = "batched") -> np.ndarray:
    client = triton_http.InferenceServerClient(server.url, network_timeout=120)
    x = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    inp = triton_http.InferInput("INPUT0", [rows, cols], "FP32")
    inp.set_data_from_numpy(x)
    out = client.infer(model, [inp]).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(out, x)  # each request gets its own rows back
    return out


def _stats(server: RunningServer, model: str) -> dict:
    answer = httpx.get(f"{server.base_url}/v2/models/{model}/stats", timeout=10)
    return answer.json()["model_stats"][0]


def test_four_batch_2_requests_become_one_execution_of_8(server: RunningServer) -> None:
    with cf.ThreadPoolExecutor(4) as pool:  # the preferred size goes at once, no 600 s wait
        list(pool.map(lambda _: _identity(server, 2, 5, "patient"), range(4)))
    stats = _stats(server, "patient")
    assert stats["inference_count"] == 8
    assert stats["execution_count"] == 1
    assert [b["batch_size"] for b in stats["batch_stats"]] == [8]
    metrics = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
    assert 'nv_inference_count{model="patient",version="1"} 8' in metrics
    assert 'nv_inference_exec_count{model="patient",version="1"} 1' in metrics


def test_requests_of_other_shapes_are_not_merged(server: RunningServer) -> None:
    httpx.post(f"{server.base_url}/v2/repository/models/batched/load", timeout=60)
    before = _stats(server, "batched")["execution_count"]
    with cf.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_identity, server, 1, cols) for cols in (3, 7)]
        for f in futures:
            f.result()
    # neither could join the other, so each went alone after the queue delay
    assert _stats(server, "batched")["execution_count"] == before + 2


def _slow(server: RunningServer, model: str, seconds: float, rows: int = 1) -> httpx.Response:
    body = {
        "inputs": [
            {"name": "SECONDS", "shape": [rows, 1], "datatype": "FP32", "data": [seconds] * rows}
        ]
    }
    return httpx.post(f"{server.base_url}/v2/models/{model}/infer", json=body, timeout=30)


def test_python_models_get_a_list_of_requests(server: RunningServer) -> None:
    _slow(server, "py_batched", 0)  # loaded
    with cf.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: _slow(server, "py_batched", 0), range(3)))
    seen = [a.json()["outputs"][0]["data"] for a in answers]
    assert all(s[0] == 3 and s[1] == 1 for s in seen), seen  # 3 requests of 1 row, together


def test_python_models_can_take_one_stacked_batch(server: RunningServer) -> None:
    _slow(server, "py_stacked", 0)
    with cf.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: _slow(server, "py_stacked", 0), range(3)))
    for answer in answers:
        data = answer.json()["outputs"][0]
        assert data["shape"] == [1, 3]  # its own row back
        assert data["data"][:2] == [1, 3]  # the model saw one request of 3 rows


def test_queue_full_is_refused(server: RunningServer) -> None:
    _slow(server, "py_queue_full", 0)
    with cf.ThreadPoolExecutor(3) as pool:
        running = pool.submit(_slow, server, "py_queue_full", 1.0)
        wait_in_flight(server, "py_queue_full", 1)
        queued = pool.submit(_slow, server, "py_queue_full", 0)
        wait_in_flight(server, "py_queue_full", 2)
        refused = _slow(server, "py_queue_full", 0)
        assert refused.status_code == 503
        assert refused.json()["error"] == "Exceeds maximum queue size"
        assert running.result().status_code == 200
        assert queued.result().status_code == 200


def test_queue_timeout_rejects_a_request_that_waited_too_long(server: RunningServer) -> None:
    _slow(server, "py_queue_timeout", 0)
    with cf.ThreadPoolExecutor(2) as pool:
        running = pool.submit(_slow, server, "py_queue_timeout", 5.0)
        wait_in_flight(server, "py_queue_timeout", 1)
        late = _slow(server, "py_queue_timeout", 0)
        assert late.status_code == 503
        assert late.json()["error"] == "Request timeout expired"
        # refused when its 200 ms ran out, not when the model freed up 5 s later
        assert not running.done()
        assert running.result().status_code == 200


def test_warmup_runs_before_the_model_is_ready(server: RunningServer) -> None:
    answer = _slow(server, "py_warm", 0)
    assert answer.status_code == 200
    executions = answer.json()["outputs"][0]["data"][2]
    assert executions == 4  # three warm-up runs, then this request
