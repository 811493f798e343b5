"""Process lifecycle: SIGTERM drain, explicit load/unload, auto-complete switch, fail-fast."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from modelyard.testing import ServerFailed, running_server, start_server
from tests.factories.onnx_models import add_sub, mlp, slow, write_model
from tests.integration.conftest import SLOW
from tests.integration.traffic import wait_in_flight


def _trips_for(seconds: float, base_url: str) -> int:
    """Calibrate the slow model on this machine: rounds that take about ``seconds``."""
    body = {"inputs": [{"name": "TRIPS", "shape": [1, 1], "datatype": "INT64", "data": [200]}]}
    httpx.post(f"{base_url}/v2/models/slow/infer", json=body, timeout=60)  # loads on demand
    start = time.perf_counter()
    r = httpx.post(f"{base_url}/v2/models/slow/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    per_trip = (time.perf_counter() - start) / 200
    return max(200, int(seconds / per_trip))


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", slow(), SLOW)
    server = start_server(tmp_path, ["--exit-timeout-secs", "30"])
    try:
        trips = _trips_for(1.5, server.base_url)
        result: dict[str, httpx.Response] = {}

        def slow_request() -> None:
            body = {
                "inputs": [{"name": "TRIPS", "shape": [1, 1], "datatype": "INT64", "data": [trips]}]
            }
            result["r"] = httpx.post(
                f"{server.base_url}/v2/models/slow/infer", json=body, timeout=60
            )

        with httpx.Client(base_url=server.base_url) as probe:
            assert probe.get("/v2/health/ready").status_code == 200
            worker = threading.Thread(target=slow_request)
            worker.start()
            wait_in_flight(server, "slow", 1)  # the slow request is now executing
            server.process.send_signal(signal.SIGTERM)
            # readiness turns false at once, on a connection opened before the signal
            deadline = time.monotonic() + 2
            status = 200
            while time.monotonic() < deadline and status == 200:
                try:
                    status = probe.get("/v2/health/ready").status_code
                except httpx.TransportError:
                    status = -1  # the listener closed: not ready either
            assert status != 200
        worker.join(timeout=60)
        assert result["r"].status_code == 200, result["r"].text
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()


def test_explicit_mode_load_and_unload(tmp_path: Path) -> None:
    write_model(tmp_path, "add_sub", add_sub(), None)
    write_model(tmp_path, "mlp", mlp(), None)
    with (
        running_server(
            tmp_path, ["--model-control-mode", "explicit", "--load-model", "mlp"]
        ) as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        index = {row["name"]: row for row in http.post("/v2/repository/index").json()}
        assert index["mlp"]["state"] == "READY"
        assert "state" not in index["add_sub"]  # known, never loaded
        assert http.get("/v2/models/add_sub/ready").status_code == 400
        assert http.post("/v2/repository/models/add_sub/load").status_code == 200
        assert http.get("/v2/models/add_sub/ready").status_code == 200
        assert http.post("/v2/repository/models/mlp/unload").status_code == 200
        assert http.get("/v2/models/mlp/ready").status_code == 400
        index = {row["name"]: row for row in http.post("/v2/repository/index").json()}
        assert index["mlp"]["state"] == "UNAVAILABLE"
        r = http.post("/v2/repository/models/nothing/load")
        assert r.status_code == 404
        assert "nothing" in r.json()["error"]


def test_explicit_load_with_config_override(tmp_path: Path) -> None:
    """tritonclient's load_model(config=...) replaces config.pbtxt for that load."""
    import json

    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    write_model(tmp_path, "mlp", mlp(), None)
    args = ["--model-control-mode=explicit", "--allow-model-load-files=true"]
    with running_server(tmp_path, args) as server:
        client = httpclient.InferenceServerClient(server.url)
        client.load_model("mlp", config=json.dumps({"max_batch_size": 2, "backend": "onnxruntime"}))
        assert client.get_model_config("mlp")["max_batch_size"] == 2
        client.load_model("mlp")  # back to config.pbtxt (none here: auto-complete)
        assert client.get_model_config("mlp")["max_batch_size"] == 4
        with pytest.raises(InferenceServerException, match="failed to parse the 'config'"):
            client.load_model("mlp", config="{not json")
        with pytest.raises(InferenceServerException, match="needs the 'config' parameter"):
            client.load_model("mlp", files={"file:1/model.onnx": b"x"})
        assert client.is_model_ready("mlp")  # the failed loads left the model serving


def test_explicit_load_with_files(tmp_path: Path) -> None:
    """Triton's file: overrides: the files sent with the load replace the store's."""
    import json

    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    write_model(tmp_path, "mlp", mlp(seed=1), None)
    args = ["--model-control-mode=explicit", "--allow-model-load-files=true"]
    with running_server(tmp_path, args) as server:
        client = httpclient.InferenceServerClient(server.url)
        config = json.dumps({"backend": "onnxruntime", "max_batch_size": 2})
        client.load_model("sent", config=config, files={"file:3/model.onnx": mlp(seed=2)})
        assert client.get_model_metadata("sent")["versions"] == ["3"]
        inp = httpclient.InferInput("INPUT", [1, 64], "FP32")
        inp.set_data_from_numpy(np.ones((1, 64), np.float32))
        assert client.infer("sent", [inp]).as_numpy("OUTPUT").shape == (1, 10)
        with pytest.raises(InferenceServerException, match="must stay within model directory"):
            client.load_model("evil", config=config, files={"file:../1/model.onnx": b"x"})


def test_reload_under_traffic_drops_nothing(tmp_path: Path) -> None:
    """While a model is reloaded again and again, every request still gets its answer."""
    write_model(tmp_path, "mlp", mlp(), None)
    body = {"inputs": [{"name": "INPUT", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
    statuses: list[int] = []
    stop = threading.Event()
    with running_server(tmp_path, ["--model-control-mode=explicit", "--load-model=mlp"]) as server:

        def traffic() -> None:
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                while not stop.is_set():
                    statuses.append(http.post("/v2/models/mlp/infer", json=body).status_code)

        workers = [threading.Thread(target=traffic) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            with httpx.Client(base_url=server.base_url, timeout=30) as admin:
                for _ in range(5):
                    assert admin.post("/v2/repository/models/mlp/load").status_code == 200
        finally:
            stop.set()
            for w in workers:
                w.join()
    assert len(statuses) > 20
    assert set(statuses) == {200}


def test_disable_auto_complete_config(tmp_path: Path) -> None:
    write_model(tmp_path, "mlp", mlp(), None)  # no config.pbtxt
    write_model(
        tmp_path,
        "add_sub",
        add_sub(),
        'backend: "onnxruntime"\n'
        'input [{name: "INPUT0" data_type: TYPE_FP32 dims: [16]},'
        ' {name: "INPUT1" data_type: TYPE_FP32 dims: [16]}]\n'
        'output [{name: "OUTPUT0" data_type: TYPE_FP32 dims: [16]},'
        ' {name: "OUTPUT1" data_type: TYPE_FP32 dims: [16]}]\n',
    )
    for flags in (["--disable-auto-complete-config"], ["--strict-model-config=true"]):
        with running_server(tmp_path, flags) as server:
            http = httpx.Client(base_url=server.base_url)
            assert http.get("/v2/models/add_sub/ready").status_code == 200
            assert http.get("/v2/models/mlp/ready").status_code == 400
            rows = {r["name"]: r for r in http.post("/v2/repository/index").json()}
            assert "auto-complete" in rows["mlp"]["reason"]
            http.close()


def test_exit_on_error_fails_fast(tmp_path: Path) -> None:
    write_model(
        tmp_path, "bad", add_sub(), 'name: "bad"\nbackend: "onnxruntime"\nmax_batch_size: -1\n'
    )
    with pytest.raises(ServerFailed) as info:
        start_server(tmp_path, ["--exit-on-error=true"], timeout=30)
    assert "bad" in str(info.value)


def test_exit_timeout_bounds_the_drain(tmp_path: Path) -> None:
    """A request longer than --exit-timeout-secs does not hold the process: exit 1 on time."""
    write_model(tmp_path, "slow", slow(), SLOW)
    server = start_server(tmp_path, ["--exit-timeout-secs", "1"])
    try:
        trips = _trips_for(6.0, server.base_url)
        body = {
            "inputs": [{"name": "TRIPS", "shape": [1, 1], "datatype": "INT64", "data": [trips]}]
        }
        worker = threading.Thread(target=lambda: _swallow(server.base_url, body), daemon=True)
        worker.start()
        wait_in_flight(server, "slow", 1)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 1  # 1: the exit timeout cut the drain short
    finally:
        server.stop()


def _swallow(base_url: str, body: dict[str, object]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{base_url}/v2/models/slow/infer", json=body, timeout=60)
