"""ONNX models placed in their own process (``modelyard.placement: process``), from outside:
real tritonclient calls against a real server, the worker processes found with psutil, the
answers compared with the same model served in the server process and with onnxruntime."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import psutil
import pytest
import tritonclient.http as triton_http
from onnx import TensorProto

from modelyard.testing import RunningServer, running_server
from tests.factories.onnx_models import identity, mlp, write_model

PROCESS = 'parameters { key: "modelyard.placement" value: { string_value: "process" } }\n'

MLP = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "INPUT", data_type: TYPE_FP32, dims: [ 64 ] }} ]
output [ {{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ 10 ] }} ]
instance_group [ {{ count: {count} kind: KIND_CPU }} ]
{extra}"""

STRINGS = (
    """name: "strings"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "INPUT0", data_type: TYPE_STRING, dims: [ -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_STRING, dims: [ -1 ] } ]
"""
    + PROCESS
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("onnx_process")
    net = mlp()
    write_model(root, "in_server", net, MLP.format(name="in_server", count=1, extra=""))
    write_model(root, "placed", net, MLP.format(name="placed", count=2, extra=PROCESS))
    batching = PROCESS + "dynamic_batching { max_queue_delay_microseconds: 200000 }\n"
    write_model(root, "batched", net, MLP.format(name="batched", count=1, extra=batching))
    bad = PROCESS.replace('"process"', '"elsewhere"')
    write_model(root, "bad_placement", net, MLP.format(name="bad_placement", count=1, extra=bad))
    write_model(root, "strings", identity(TensorProto.STRING, ["n"]), STRINGS)
    (root / "model.onnx").write_bytes(net)  # for the in-process reference
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with running_server(repo) as srv:
        yield srv


def _infer(server: RunningServer, model: str, x: np.ndarray) -> np.ndarray:
    client = triton_http.InferenceServerClient(server.url, network_timeout=120)
    inp = triton_http.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.infer(model, [inp]).as_numpy("OUTPUT")


def _workers(server: RunningServer, model: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.Process(server.process.pid).children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if "modelyard_worker" in cmdline and any(a.startswith(f"{model}_") for a in cmdline):
            found.append(proc)
    return found


def _stats(server: RunningServer, model: str) -> dict:
    answer = httpx.get(f"{server.base_url}/v2/models/{model}/stats", timeout=10)
    return answer.json()["model_stats"][0]


def _reference(repo: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(repo / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"INPUT": x})[0]


def test_many_clients_get_onnxruntime_s_answers_from_one_process_per_instance(
    server: RunningServer, repo: Path
) -> None:
    rng = np.random.default_rng(3)
    batches = [rng.standard_normal((1 + i % 8, 64)).astype(np.float32) for i in range(64)]
    with cf.ThreadPoolExecutor(16) as pool:
        placed = list(pool.map(lambda x: _infer(server, "placed", x), batches))
        in_server = list(pool.map(lambda x: _infer(server, "in_server", x), batches))
    for x, a, b in zip(batches, placed, in_server, strict=True):
        np.testing.assert_allclose(a, _reference(repo, x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the config's two instances are two worker processes; the in-server model has none
    assert len(_workers(server, "placed")) == 2
    assert _workers(server, "in_server") == []
    stats = _stats(server, "placed")
    assert stats["inference_count"] == sum(len(x) for x in batches)
    assert stats["inference_stats"]["success"]["count"] == len(batches)


def test_a_dynamic_batch_is_one_execution_in_the_process(server: RunningServer) -> None:
    rows = [np.full((n, 64), n, dtype=np.float32) for n in (1, 2, 3, 2)]
    with cf.ThreadPoolExecutor(len(rows)) as pool:
        outs = list(pool.map(lambda x: _infer(server, "batched", x), rows))
    for x, out in zip(rows, outs, strict=True):
        assert out.shape == (len(x), 10)  # each request gets its own rows back
        np.testing.assert_allclose(out, _infer(server, "in_server", x), rtol=1e-5, atol=1e-6)
    stats = _stats(server, "batched")
    # the four queued within the 0.2 s delay; the four checks above went one at a time
    batch_sizes = sorted(b["batch_size"] for b in stats["batch_stats"])
    assert max(batch_sizes) >= 3, stats["batch_stats"]
    assert stats["execution_count"] < stats["inference_stats"]["success"]["count"]


def test_bytes_tensors_cross_the_process_boundary(server: RunningServer) -> None:
    client = triton_http.InferenceServerClient(server.url, network_timeout=60)
    words = np.array([b"caf\xc3\xa9", b"", b"modelyard"], dtype=np.object_)
    inp = triton_http.InferInput("INPUT0", [3], "BYTES")
    inp.set_data_from_numpy(words)
    out = client.infer("strings", [inp]).as_numpy("OUTPUT0")
    assert list(out) == list(words)
    # bytes onnxruntime cannot take (not UTF-8) are refused with a clear error, and the
    # process goes on serving
    bad = triton_http.InferInput("INPUT0", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"\xff\xfe"], dtype=np.object_))
    with pytest.raises(triton_http.InferenceServerException, match="UTF-8"):
        client.infer("strings", [bad])
    assert list(client.infer("strings", [inp]).as_numpy("OUTPUT0")) == list(words)


def test_wrong_shape_is_refused_before_the_process(server: RunningServer) -> None:
    wrong = [0.0] * 63
    answer = httpx.post(
        f"{server.base_url}/v2/models/placed/infer",
        json={"inputs": [{"name": "INPUT", "shape": [1, 63], "datatype": "FP32", "data": wrong}]},
        timeout=60,
    )
    assert answer.status_code == 400
    assert "INPUT" in answer.json()["error"]


def test_an_unknown_placement_fails_the_load_with_its_name(server: RunningServer) -> None:
    answer = httpx.post(f"{server.base_url}/v2/repository/models/bad_placement/load", timeout=60)
    assert answer.status_code == 400
    assert "modelyard.placement" in answer.json()["error"]
    assert "elsewhere" in answer.json()["error"]
    x = np.ones((1, 64), dtype=np.float32)
    assert _infer(server, "placed", x).shape == (1, 10)  # the others keep serving


def test_a_killed_process_is_restarted_and_unload_stops_every_one(
    server: RunningServer,
) -> None:
    x = np.ones((2, 64), dtype=np.float32)
    expected = _infer(server, "in_server", x)
    _infer(server, "placed", x)
    first = _workers(server, "placed")
    assert len(first) == 2
    first[0].kill()
    deadline = time.monotonic() + 60
    while True:  # the other instance serves meanwhile; the killed one comes back
        # a request the killed instance held fails; the next goes elsewhere
        with contextlib.suppress(triton_http.InferenceServerException):
            np.testing.assert_allclose(_infer(server, "placed", x), expected, rtol=1e-5)
        pids = {p.pid for p in _workers(server, "placed")}
        if len(pids) == 2 and first[0].pid not in pids:
            break
        assert time.monotonic() < deadline, f"instance not restarted: {pids}"
        time.sleep(0.2)
    np.testing.assert_allclose(_infer(server, "placed", x), expected, rtol=1e-5)
    answer = httpx.post(f"{server.base_url}/v2/repository/models/placed/unload", timeout=60)
    assert answer.status_code == 200
    deadline = time.monotonic() + 30
    while _workers(server, "placed"):
        assert time.monotonic() < deadline, "worker processes outlived the unload"
        time.sleep(0.2)
