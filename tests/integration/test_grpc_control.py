"""gRPC beyond inference, against real `modelyard serve` processes: model control in explicit
mode, on-demand loading with eviction, access control (Triton's --grpc-restricted-protocol,
bearer tokens in metadata), model-name checks, and the SIGTERM drain."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from modelyard.testing import RunningServer, running_server
from modelyard.testing.server import ServerFailed, start_server
from tests.factories.onnx_models import add_sub, mlp, slow, write_model
from tests.integration.conftest import ADD_SUB, SLOW

MGMT = "m" * 24
INFER = "i" * 24
A = np.arange(16, dtype=np.float32).reshape(1, 16)


def _add_sub_inputs(a: np.ndarray = A) -> list[grpcclient.InferInput]:
    inputs = [
        grpcclient.InferInput("INPUT0", [1, 16], "FP32"),
        grpcclient.InferInput("INPUT1", [1, 16], "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(np.ones_like(a))
    return inputs


def _error(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return str(info.value.status()), str(info.value.message())


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def explicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Explicit model control, tokens, and a restricted model-repository group."""
    repo = tmp_path_factory.mktemp("explicit-repo")
    write_model(repo, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    write_model(repo, "mlp", mlp(), None)
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(f"management {MGMT}\ninference {INFER}\n")
    tokens.chmod(0o600)
    args = [
        "--model-control-mode=explicit",
        "--load-model=add_sub",
        f"--auth-token-file={tokens}",
        "--grpc-restricted-protocol=model-repository:admin-key=open-sesame",
    ]
    headers = {"Authorization": f"Bearer {MGMT}"}
    with running_server(repo, args, headers=headers) as s:
        yield s


ADMIN = {**_bearer(MGMT), "triton-grpc-protocol-admin-key": "open-sesame"}


def test_model_control_in_explicit_mode(explicit: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(explicit.grpc_url)
    try:
        assert client.is_model_ready("add_sub", headers=_bearer(INFER))
        assert not client.is_model_ready("mlp", headers=_bearer(INFER))
        assert _error(client.infer, "mlp", [], headers=_bearer(INFER))[0] in (
            "StatusCode.NOT_FOUND",
            "StatusCode.UNAVAILABLE",
        )
        client.load_model("mlp", headers=ADMIN)
        assert client.is_model_ready("mlp", headers=_bearer(INFER))
        rows = client.get_model_repository_index(headers=ADMIN, as_json=True)["models"]
        assert {r["name"]: r.get("state") for r in rows}["mlp"] == "READY"
        client.unload_model("mlp", headers=ADMIN)
        assert not client.is_model_ready("mlp", headers=_bearer(INFER))
        # a config override, as a JSON string (Triton's `config` load parameter)
        config = json.dumps({"name": "add_sub", "backend": "onnxruntime", "max_batch_size": 2})
        client.load_model("add_sub", headers=ADMIN, config=config)
        assert client.get_model_config("add_sub", headers=_bearer(INFER)).config.max_batch_size == 2
        # files sent with the load (code from the network) are refused by default
        status, message = _error(
            client.load_model,
            "add_sub",
            headers=ADMIN,
            config=config,
            files={"file:1/model.onnx": add_sub(dims=["batch", 16])},
        )
        assert status == "StatusCode.PERMISSION_DENIED"
        assert "--allow-model-load-files" in message
        # Triton's checks of the load parameters, before anything is loaded
        with grpc.insecure_channel(explicit.grpc_url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = pb.RepositoryModelLoadRequest(model_name="add_sub")
            request.parameters["config"].int64_param = 3
            with pytest.raises(grpc.RpcError) as info:
                stub.RepositoryModelLoad(request, metadata=list(ADMIN.items()), timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == (
                "invalid value type for load parameter 'config', expected string_param."
            )
        # model names that could walk a path are refused, as over HTTP
        status, message = _error(client.load_model, "../x", headers=ADMIN)
        assert status == "StatusCode.INVALID_ARGUMENT"
        assert "path traversal" in message
        result = client.infer("add_sub", _add_sub_inputs(), headers=_bearer(INFER))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + 1)
    finally:
        client.close()


def test_access_control_over_grpc(explicit: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(explicit.grpc_url)
    try:
        # the server's own probes need no token; a model's readiness does
        assert client.is_server_live() and client.is_server_ready()
        assert _error(client.is_model_ready, "add_sub") == (
            "StatusCode.UNAUTHENTICATED",
            "this server needs a bearer token: send 'Authorization: Bearer <token>'",
        )
        assert _error(client.infer, "add_sub", _add_sub_inputs(), headers=_bearer("x" * 20)) == (
            "StatusCode.UNAUTHENTICATED",
            "the bearer token is not valid",
        )
        # an inference token may not manage models
        status, message = _error(client.unload_model, "add_sub", headers=_bearer(INFER))
        assert status == "StatusCode.PERMISSION_DENIED" and "management token" in message
        # a management token without the restricted group's metadata: Triton's answer
        assert _error(client.get_model_repository_index, headers=_bearer(MGMT)) == (
            "StatusCode.UNAVAILABLE",
            "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'",
        )
        # the stream is gated too
        with grpc.insecure_channel(explicit.grpc_url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                list(stub.ModelStreamInfer(iter([pb.ModelInferRequest()]), timeout=30))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        client.close()


def test_restricted_health_needs_its_metadata(tmp_path: Path) -> None:
    write_model(tmp_path, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    args = ["--grpc-restricted-protocol=health,inference:probe=yes"]
    with running_server(tmp_path, args) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert _error(client.is_server_live) == (
            "StatusCode.UNAVAILABLE",
            "This protocol is restricted, expecting header 'triton-grpc-protocol-probe'",
        )
        ok = {"triton-grpc-protocol-probe": "yes"}
        assert client.is_server_live(headers=ok)
        result = client.infer("add_sub", _add_sub_inputs(), headers=ok)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + 1)
        assert client.get_server_metadata().name == "modelyard"  # not restricted
        client.close()
        # HTTP has restrictions of its own (--http-restricted-api): none here
        assert httpx.get(f"{server.base_url}/v2/health/live", timeout=10).status_code == 200


def test_bad_grpc_flags_stop_the_start(tmp_path: Path) -> None:
    with pytest.raises(
        ServerFailed,
        match="Invalid value for --grpc-restricted-protocol: unknown restricted protocol",
    ):
        start_server(tmp_path, ["--grpc-restricted-protocol=nope:k=v"], timeout=30).stop()
    with pytest.raises(
        ServerFailed, match="Invalid value for --grpc-infer-response-compression-level"
    ):
        start_server(tmp_path, ["--grpc-infer-response-compression-level=max"], timeout=30).stop()


def test_a_busy_grpc_port_is_one_clear_line(tmp_path: Path) -> None:
    with running_server(tmp_path) as first:
        assert first.grpc_port is not None
        with pytest.raises(ServerFailed, match="choose another port with --grpc-port") as info:
            start_server(tmp_path, [f"--grpc-port={first.grpc_port}"], timeout=30).stop()
        assert "Traceback" not in str(info.value)


def _metric(base_url: str, name: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def test_on_demand_loads_and_evicts_through_grpc(tmp_path: Path) -> None:
    """Models load on their first gRPC request and make room for each other within the
    memory budget, counted as over HTTP."""
    wide = (64, 1024, 1024, 10)  # ~4.5 MB of weights: a model the budget notices
    names = [f"m{i}" for i in range(6)]
    for i, name in enumerate(names):
        write_model(tmp_path, name, mlp(wide, seed=i), None)
    with running_server(tmp_path, ["--memory-budget", "24MiB"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        x = grpcclient.InferInput("INPUT", [1, 64], "FP32")
        x.set_data_from_numpy(np.ones((1, 64), dtype=np.float32))
        for _ in range(2):
            for name in names:
                assert client.infer(name, [x]).as_numpy("OUTPUT").shape == (1, 10)
        assert _metric(server.base_url, "modelyard_model_evictions_total") > 0
        loaded = [r for r in client.get_model_repository_index().models if r.state == "READY"]
        assert 0 < len(loaded) < len(names)
        stats = client.get_inference_statistics().model_stats
        assert sum(s.inference_count for s in stats) == 2 * len(names)
        client.close()


def test_sigterm_drains_grpc(tmp_path: Path) -> None:
    """SIGTERM during a slow call: readiness turns false, the call in flight finishes, a new
    call finds the port closed (UNAVAILABLE, never sent), and the server exits 0."""
    write_model(tmp_path, "slow", slow(), SLOW)
    server = start_server(tmp_path, ["--exit-timeout-secs=120"])
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        quick = _trips(1)
        client.infer("slow", [quick])  # loaded
        started = time.monotonic()
        client.infer("slow", [_trips(50)])
        per_trip = max((time.monotonic() - started) / 50, 1e-5)
        long = _trips(int(8.0 / per_trip) + 1)  # about 8 s of work
        answers: list[Any] = []
        slow_call = threading.Thread(
            target=lambda: answers.append(client.infer("slow", [long]).as_numpy("OUTPUT"))
        )
        slow_call.start()
        # the server answers /metrics while the long call runs (it runs off the event loop)
        deadline = time.monotonic() + 30
        while _metric(server.base_url, "nv_inference_pending_request_count") < 1:
            assert slow_call.is_alive(), "the long call ended before it was seen in flight"
            assert time.monotonic() < deadline, "the long call never showed as pending"
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        other = grpcclient.InferenceServerClient(server.grpc_url)
        deadline = time.monotonic() + 30
        while _still_ready(other):
            assert time.monotonic() < deadline, "still ready 30 s after SIGTERM"
            time.sleep(0.01)
        status, message = _error(other.infer, "slow", [quick])
        assert status == "StatusCode.UNAVAILABLE"
        assert "failed to connect" in message.lower(), message
        slow_call.join(120)
        assert len(answers) == 1 and answers[0].shape == (1, 1)
        assert server.process.wait(60) == 0
        other.close()
        client.close()
    finally:
        server.stop()


def _still_ready(client: grpcclient.InferenceServerClient) -> bool:
    """ServerReady, where the port still answers: False once it says so or has closed."""
    try:
        return bool(client.is_server_ready())
    except InferenceServerException:
        return False


def test_sigterm_under_grpc_load_loses_no_call(tmp_path: Path) -> None:
    """Many clients calling ModelInfer in a loop, each on its own connection, while the
    server gets SIGTERM: every call either succeeds or fails UNAVAILABLE without having
    run (refused by the drain, or never sent: the port had closed after its GOAWAY), none
    is cut short (CANCELLED, a reset connection), the calls in flight at the signal all
    succeed, and the server exits 0 well within its grace. An idle stream open at the
    signal ends cleanly (no error) instead of holding the drain."""
    write_model(tmp_path, "slow", slow(), SLOW)
    grace = 30
    server = start_server(tmp_path, [f"--exit-timeout-secs={grace}"])
    lock = threading.Lock()
    outcomes: dict[str, int] = {}
    before_signal: dict[str, int] = {}  # of the calls sent before the signal
    signalled: list[float] = []
    stop = threading.Event()

    def calls() -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        trips = _trips(3)  # a few ms each: a queue of calls in flight at any time
        try:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    client.infer("slow", [trips], client_timeout=60)
                    outcome = "ok"
                except InferenceServerException as exc:
                    outcome = f"{exc.status()} {exc.message()}"
                    time.sleep(0.005)
                with lock:
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                    if signalled and sent < signalled[0]:
                        before_signal[outcome] = before_signal.get(outcome, 0) + 1
                    if sum(outcomes.values()) == 300 and not signalled:
                        signalled.append(time.monotonic())
                        server.process.send_signal(signal.SIGTERM)
        finally:
            client.close()

    stream_errors: list[Any] = []
    streaming = grpcclient.InferenceServerClient(server.grpc_url)
    threads = [threading.Thread(target=calls) for _ in range(16)]
    try:
        streaming.start_stream(callback=lambda result, error: stream_errors.append(error))
        streaming.async_stream_infer("slow", [_trips(1)], request_id="s")
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while not signalled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert signalled, outcomes
        code = server.process.wait(grace + 30)
        took = time.monotonic() - signalled[0]
        time.sleep(0.2)  # calls after the exit: refused connections, as after the GOAWAY
        stop.set()
        for t in threads:
            t.join(60)
        streaming.stop_stream()  # returns: the server ended the stream
        assert code == 0
        assert took < grace / 3, f"drain took {took:.1f} s"
        lost = {
            outcome: n
            for outcome, n in outcomes.items()
            if outcome != "ok" and not _refused_before_running(outcome)
        }
        assert lost == {}, outcomes
        assert set(before_signal) == {"ok"}, before_signal
        assert outcomes["ok"] >= 300
        assert stream_errors == [None]  # its one answer, then a clean end
    finally:
        stop.set()
        streaming.close()
        server.stop()


def _refused_before_running(outcome: str) -> bool:
    """A call that failed without having run: refused by the drain, or never sent."""
    if not outcome.startswith("StatusCode.UNAVAILABLE "):
        return False
    message = outcome.removeprefix("StatusCode.UNAVAILABLE ").lower()
    return message.startswith("the server is shutting down") or (
        "failed to connect" in message and "connection refused" in message
    )


def _trips(n: int) -> grpcclient.InferInput:
    trips = grpcclient.InferInput("TRIPS", [1, 1], "INT64")
    trips.set_data_from_numpy(np.array([[n]], dtype=np.int64))
    return trips
