"""Python-backend models in their own processes, seen from outside: a real server, real
clients, worker processes found and killed with psutil.

Transcript parity with Triton lives in test_python_parity.py; this module checks what only
modelyard promises: a worker's crash or hang touches only its own requests and heals on its
own, instances run in parallel, BLS reaches ONNX models, environments come from
requirements.txt (local wheels, no index) and archives.
"""

from __future__ import annotations

import concurrent.futures as cf
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.http as triton_http

from modelyard.testing import RunningServer, running_server
from tests.factories.envs import write_wheel
from tests.factories.onnx_models import add_sub, write_model
from tests.factories.python_models import (
    CRASH_AT_INIT_PY,
    add_sub_model,
    bf16_model,
    bls_bytes_name_model,
    bls_onnx_model,
    probe_model,
    sleep_model,
    write_python_model,
)
from tests.integration.conftest import ADD_SUB
from tests.integration.traffic import wait_in_flight

# BLS from initialize: modelyard answers it with a clear error at once (no event loop side
# for the worker exists yet), and the model decides what to do with it
BLS_IN_INIT_PY = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        call = pb_utils.InferenceRequest(
            model_name="py_add_sub",
            inputs=[pb_utils.Tensor("INPUT0", np.zeros(16, np.float32))],
            requested_output_names=["OUTPUT0"],
        )
        result = call.exec()
        self.seen = result.error().message() if result.has_error() else "answered"

    def execute(self, requests):
        out = np.array([self.seen.encode()], dtype=object)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", out)]) for _ in requests]
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pyrepo")
    add_sub_model(root)
    add_sub_model(root, "py_big", dim=-1)
    sleep_model(root, "sleeper", count=1)
    sleep_model(root, "sleeper2", count=2)
    sleep_model(root, "victim", count=1)
    write_model(root, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    bls_onnx_model(root, "pre_onnx", target="add_sub")
    bf16_model(root)
    bls_bytes_name_model(root)
    write_python_model(
        root,
        "bls_in_init",
        BLS_IN_INIT_PY,
        'name: "bls_in_init"\nbackend: "python"\ninput [ { name: "X", data_type: TYPE_FP32, '
        'dims: [ 1 ] } ]\noutput [ { name: "Y", data_type: TYPE_STRING, dims: [ 1 ] } ]\n',
    )
    write_python_model(
        root,
        "broken_init",
        CRASH_AT_INIT_PY,
        'name: "broken_init"\nbackend: "python"\ninput [ { name: "X", data_type: TYPE_FP32, '
        'dims: [ 1 ] } ]\noutput [ { name: "Y", data_type: TYPE_FP32, dims: [ 1 ] } ]\n',
    )
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with running_server(repo) as srv:
        yield srv


def _sleep(client: httpx.Client, model: str, seconds: float) -> httpx.Response:
    body = {"inputs": [{"name": "SECONDS", "shape": [1], "datatype": "FP32", "data": [seconds]}]}
    return client.post(f"/v2/models/{model}/infer", json=body, timeout=60)


def _worker_pids(server: RunningServer, instance: str) -> list[int]:
    parent = psutil.Process(server.process.pid)
    return [
        p.pid
        for p in parent.children(recursive=True)
        if "modelyard_worker" in " ".join(p.cmdline()) and instance in p.cmdline()
    ]


def _add_sub_inputs(dim: int = 16) -> list[triton_http.InferInput]:
    a = np.arange(dim, dtype=np.float32)
    b = np.ones(dim, dtype=np.float32)
    i0 = triton_http.InferInput("INPUT0", [dim], "FP32")
    i0.set_data_from_numpy(a)
    i1 = triton_http.InferInput("INPUT1", [dim], "FP32")
    i1.set_data_from_numpy(b, binary_data=True)
    return [i0, i1]


def test_add_sub_through_tritonclient(server: RunningServer) -> None:
    client = triton_http.InferenceServerClient(server.url)
    result = client.infer("py_add_sub", _add_sub_inputs())
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.arange(16) + 1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.arange(16) - 1)
    assert client.is_model_ready("py_add_sub")


def test_large_tensors_cross_the_process_boundary_intact(server: RunningServer) -> None:
    """8 MB per tensor, through the shared-memory arenas both ways, many times over (more
    than the arenas hold, so freed space must be reused), several requests at once."""

    def call(seed: int) -> None:
        client = triton_http.InferenceServerClient(server.url)  # gevent: one per thread
        a = np.random.default_rng(seed).standard_normal(2_000_000).astype(np.float32)
        b = np.full(2_000_000, seed, dtype=np.float32)
        i0 = triton_http.InferInput("INPUT0", [a.size], "FP32")
        i0.set_data_from_numpy(a, binary_data=True)
        i1 = triton_http.InferInput("INPUT1", [b.size], "FP32")
        i1.set_data_from_numpy(b, binary_data=True)
        outs = [
            triton_http.InferRequestedOutput(n, binary_data=True) for n in ("OUTPUT0", "OUTPUT1")
        ]
        result = client.infer("py_big", [i0, i1], outputs=outs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)

    with cf.ThreadPoolExecutor(3) as pool:
        list(pool.map(call, range(12)))


def test_bls_reaches_an_onnx_model_loaded_on_demand(server: RunningServer) -> None:
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    client = triton_http.InferenceServerClient(server.url)
    inp = triton_http.InferInput("X", [1, 16], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("pre_onnx", [inp])
    # the ONNX add_sub adds its inputs: 2x + x
    np.testing.assert_allclose(result.as_numpy("Y"), 3 * x, rtol=1e-6)
    assert client.is_model_ready("add_sub")  # loaded for the BLS call


def test_bf16_round_trips_through_a_python_model(server: RunningServer) -> None:
    """BF16 in, BF16 out (ml_dtypes arithmetic, and a DLPack pass-through): before, the
    worker refused with "unsupported numpy dtype bfloat16 for a Triton tensor"."""
    import ml_dtypes

    x = np.array([1.5, -2.0, 3.25, 0.0078125], dtype=ml_dtypes.bfloat16)
    client = triton_http.InferenceServerClient(server.url)
    inp = triton_http.InferInput("X", [4], "BF16")
    inp.set_data_from_numpy(x, binary_data=True)
    outs = [triton_http.InferRequestedOutput(n, binary_data=True) for n in ("DOUBLED", "SAME")]
    result = client.infer("py_bf16", [inp], outputs=outs)
    doubled, same = result.as_numpy("DOUBLED"), result.as_numpy("SAME")
    assert doubled.dtype == same.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(doubled, (x.astype(np.float32) * 2).astype(ml_dtypes.bfloat16))
    np.testing.assert_array_equal(same, x)
    metadata = client.get_model_metadata("py_bf16")
    assert {o["datatype"] for o in metadata["outputs"]} == {"BF16"}


def test_bls_takes_the_model_name_as_bytes(server: RunningServer) -> None:
    """``as_numpy()[0]`` of a BYTES tensor is bytes: Triton looks up 'py_add_sub' with it;
    modelyard looked up "b'py_add_sub'" (not found)."""
    client = triton_http.InferenceServerClient(server.url)
    inputs = _add_sub_inputs()
    name = triton_http.InferInput("MODEL_NAME", [1], "BYTES")
    name.set_data_from_numpy(np.array([b"py_add_sub"], dtype=object))
    result = client.infer("bls_bytes_name", [*inputs, name])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.arange(16) + 1)


def test_instances_run_in_parallel(server: RunningServer) -> None:
    """count 2: two concurrent 0.6 s requests take about one sleep; count 1: two sleeps."""
    with httpx.Client(base_url=server.base_url) as client:
        for model in ("sleeper", "sleeper2"):
            assert _sleep(client, model, 0).status_code == 200  # loaded and warm
    timings = {}
    pids = {}
    for model in ("sleeper", "sleeper2"):
        with (
            httpx.Client(base_url=server.base_url) as c1,
            httpx.Client(base_url=server.base_url) as c2,
            cf.ThreadPoolExecutor(2) as pool,
        ):
            start = time.perf_counter()
            futures = [pool.submit(_sleep, c, model, 0.6) for c in (c1, c2)]
            answers = [f.result() for f in futures]
            timings[model] = time.perf_counter() - start
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        pids[model] = {a.json()["outputs"][0]["data"][0] for a in answers}
    assert timings["sleeper2"] < 1.0, timings
    assert timings["sleeper"] >= 1.15, timings
    assert len(pids["sleeper2"]) == 2 and len(pids["sleeper"]) == 1


def test_killed_worker_fails_only_its_requests_and_recovers(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        assert _sleep(client, "victim", 0).status_code == 200
    (old_pid,) = _worker_pids(server, "victim_0_0")
    stop = time.monotonic() + 3.0
    other_failures: list[str] = []
    other_count = 0

    def other_traffic() -> int:
        done = 0
        client = triton_http.InferenceServerClient(server.url)
        while time.monotonic() < stop:
            for model in ("py_add_sub", "add_sub"):
                inputs = _add_sub_inputs()
                if model == "add_sub":  # the ONNX one is batched
                    inputs = [triton_http.InferInput(i.name(), [1, 16], "FP32") for i in inputs]
                    for i in inputs:
                        i.set_data_from_numpy(np.ones((1, 16), dtype=np.float32))
                try:
                    client.infer(model, inputs)
                    done += 1
                except Exception as exc:  # collected and asserted below
                    other_failures.append(f"{model}: {exc}")
        return done

    with cf.ThreadPoolExecutor(4) as pool:
        traffic = [pool.submit(other_traffic) for _ in range(2)]
        with (
            httpx.Client(base_url=server.base_url) as c1,
            httpx.Client(base_url=server.base_url) as c2,
        ):
            in_flight = [pool.submit(_sleep, c, "victim", 5.0) for c in (c1, c2)]
            wait_in_flight(server, "victim", 2)
            psutil.Process(old_pid).kill()
            answers = [f.result(timeout=10) for f in in_flight]
        other_count = sum(f.result() for f in traffic)
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert "killed by signal 9" in answer.json()["error"]
        assert "victim" in answer.json()["error"]
    assert other_failures == []
    assert other_count > 50
    # it heals on its own: a new worker, no reload asked for
    deadline = time.monotonic() + 15
    with httpx.Client(base_url=server.base_url) as client:
        while True:
            answer = _sleep(client, "victim", 0)
            if answer.status_code == 200:
                break
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.1)
    new_pid = answer.json()["outputs"][0]["data"][0]
    assert new_pid != old_pid
    assert _worker_pids(server, "victim_0_0") == [new_pid]


def test_model_failing_in_initialize_is_a_clear_load_error(server: RunningServer) -> None:
    body = {"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    with httpx.Client(base_url=server.base_url) as client:
        answer = client.post("/v2/models/broken_init/infer", json=body, timeout=30)
        assert answer.status_code >= 400
        assert "weights file is missing" in answer.json()["error"]
        # everything else still serves
        assert _sleep(client, "sleeper", 0).status_code == 200
    assert _worker_pids(server, "broken_init_0_0") == []  # nothing left running


def test_bls_from_initialize_is_a_clear_error_not_a_hang(server: RunningServer) -> None:
    body = {"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    # a hang would last the worker's 300 s start timeout, past this request's 60 s
    answer = httpx.post(f"{server.base_url}/v2/models/bls_in_init/infer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    seen = answer.json()["outputs"][0]["data"][0]
    assert "from initialize is not supported" in seen


def test_hung_model_hits_the_execute_timeout_and_recovers(tmp_path: Path) -> None:
    sleep_model(tmp_path, "hang")
    add_sub_model(tmp_path)
    with (
        running_server(tmp_path, ["--python-execute-timeout", "1"]) as srv,
        httpx.Client(base_url=srv.base_url) as client,
    ):
        assert _sleep(client, "hang", 0).status_code == 200
        answer = _sleep(client, "hang", 30)  # without the timeout: 200 after 30 s
        assert answer.status_code == 503
        assert "did not answer within 1 s" in answer.json()["error"]
        deadline = time.monotonic() + 15
        while _sleep(client, "hang", 0).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_requirements_pin_different_versions_per_model(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "myard_probe", "1.0")
    write_wheel(wheels, "myard_probe", "2.0")
    repo = tmp_path / "repo"
    probe_model(repo, "probe_v1", "myard_probe==1.0")
    probe_model(repo, "probe_v2", "myard_probe==2.0")
    envs = tmp_path / "envs"
    args = [
        "--python-env-dir",
        str(envs),
        "--python-env-no-index",
        "--python-env-find-links",
        str(wheels),
    ]
    body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [0.0]}]}
    with running_server(repo, args) as srv, httpx.Client(base_url=srv.base_url) as client:
        for model, version in (("probe_v1", "1.0"), ("probe_v2", "2.0")):
            answer = client.post(f"/v2/models/{model}/infer", json=body, timeout=120)
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == [version]
    built = sorted(p.name for p in envs.rglob("*") if p.is_dir())
    # a second server reuses the built environments: the first request is quick and
    # nothing new is built
    with running_server(repo, args) as srv, httpx.Client(base_url=srv.base_url) as client:
        start = time.perf_counter()
        answer = client.post("/v2/models/probe_v2/infer", json=body, timeout=120)
        first = time.perf_counter() - start
        assert answer.json()["outputs"][0]["data"] == ["2.0"]
    assert first < 2.0, first
    assert sorted(p.name for p in envs.rglob("*") if p.is_dir()) == built


def test_hostile_environment_archive_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    folder = probe_model(repo, "evil", "")
    (folder / "requirements.txt").unlink()
    with tarfile.open(folder / "env.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 4
        import io

        tar.addfile(info, io.BytesIO(b"evil"))
    with (folder / "config.pbtxt").open("a") as f:
        f.write(
            'parameters { key: "EXECUTION_ENV_PATH", value: { string_value: '
            '"$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }\n'
        )
    add_sub_model(repo)
    with running_server(repo) as srv, httpx.Client(base_url=srv.base_url) as client:
        body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [0.0]}]}
        answer = client.post("/v2/models/evil/infer", json=body, timeout=60)
        assert answer.status_code >= 400
        assert "escaped.txt" in answer.json()["error"] or ".." in answer.json()["error"]
        triton = triton_http.InferenceServerClient(srv.url)
        assert triton.infer("py_add_sub", _add_sub_inputs()).as_numpy("OUTPUT0") is not None
    assert not list(tmp_path.rglob("escaped.txt"))
