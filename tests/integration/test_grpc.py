"""KServe v2 over gRPC against a real `modelyard serve` process, with NVIDIA's own
`tritonclient.grpc` (sync, async_infer callbacks, aio, streaming) and raw grpcio stubs for
the requests tritonclient never sends. One server for the module: ONNX, Python, FIL and
ensemble models, loaded on demand.

Status codes and texts are Triton 2.51's, recorded from its gRPC endpoint.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from modelyard.testing import RunningServer, running_server
from tests.factories.python_models import write_python_model
from tests.factories.trees import CASES, rows
from tests.integration.conftest import IDENTITY_TYPES, build_repository

HERE = Path(__file__).parent
FIL = next(case for case in CASES if case.name == "xgb_json_regression")

# sends one response every 20 ms, from a thread of its own (Triton's decoupled pattern),
# until it has sent N or the request is cancelled; then writes "cancelled" to the file the
# request's 'marker' parameter names
TICKER_PY = """import json, threading, time
import numpy as np
import triton_python_backend_utils as pb_utils


def tick(n, marker, sender):
    for i in range(n):
        if sender.is_cancelled():
            if marker:
                with open(marker, "w") as f:
                    f.write("cancelled")
            break
        out = pb_utils.Tensor("OUT", np.array([i], dtype=np.int32))
        sender.send(pb_utils.InferenceResponse([out]))
        time.sleep(0.02)
    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            marker = json.loads(request.parameters()).get("marker")
            sender = request.get_response_sender()
            threading.Thread(target=tick, args=(n, marker, sender), daemon=True).start()
        return None
"""
TICKER_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [ {{ name: "N", data_type: TYPE_INT32, dims: [ 1 ] }} ]
output [ {{ name: "OUT", data_type: TYPE_INT32, dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""

# decoupled: N responses (OUT = [i]); how the final flag goes out is MODE's: 0 with the last
# response, 1 alone after them (send(flags=FINAL)), 2 with an empty response of its own
FINALS_PY = """import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            mode = int(pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0])
            sender = request.get_response_sender()
            for i in range(n):
                response = pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUT", np.array([i], dtype=np.float32))]
                )
                sender.send(response, flags=FINAL if mode == 0 and i == n - 1 else 0)
            if mode == 1 or (mode == 0 and n == 0):
                sender.send(flags=FINAL)
            elif mode == 2:
                sender.send(pb_utils.InferenceResponse([]), flags=FINAL)
        return None
"""
FINALS_CONFIG = """name: "finals"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "N", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "MODE", data_type: TYPE_INT32, dims: [ 1 ] }
]
output [ { name: "OUT", data_type: TYPE_FP32, dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""
# finals, then scale (x2) on each of its responses
FINALS_PIPELINE = """name: "finals_pipeline"
platform: "ensemble"
max_batch_size: 0
input [
  { name: "N", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "MODE", data_type: TYPE_INT32, dims: [ 1 ] }
]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ -1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "finals" model_version: -1
      input_map { key: "N" value: "N" } input_map { key: "MODE" value: "MODE" }
      output_map { key: "OUT" value: "R" } },
    { model_name: "scale" model_version: 1
      input_map { key: "INPUT" value: "R" } output_map { key: "OUTPUT" value: "Y" } }
  ]
}
"""

# BLS over finals (MODE as given) or, MODE < 0, the plain model scale, through
# exec(decoupled=True) or async_exec(decoupled=True): OUT (or OUTPUT) of each response the
# iterator yields, -1 for an empty one
BLS_FINALS_PY = """import numpy as np
import triton_python_backend_utils as pb_utils


def _values(responses):
    values = []
    for response in responses:
        out = response.output_tensors()
        values.append(float(out[0].as_numpy()[0]) if out else -1.0)
    return values


class TritonPythonModel:
    async def execute(self, requests):
        answers = []
        for request in requests:
            n = pb_utils.get_input_tensor_by_name(request, "N")
            mode = pb_utils.get_input_tensor_by_name(request, "MODE")
            use_async = pb_utils.get_input_tensor_by_name(request, "ASYNC").as_numpy()[0]
            if mode.as_numpy()[0] < 0:
                x = pb_utils.Tensor("INPUT", np.array([3.0], dtype=np.float32))
                call = pb_utils.InferenceRequest(
                    model_name="scale", model_version=1, inputs=[x],
                    requested_output_names=["OUTPUT"],
                )
            else:
                call = pb_utils.InferenceRequest(
                    model_name="finals", inputs=[n, mode], requested_output_names=["OUT"]
                )
            if use_async:
                responses = list(await call.async_exec(decoupled=True))
            else:
                responses = list(call.exec(decoupled=True))
            y = np.array(_values(responses), dtype=np.float32)
            answers.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return answers
"""
BLS_FINALS_CONFIG = """name: "bls_finals"
backend: "python"
max_batch_size: 0
input [
  { name: "N", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "MODE", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "ASYNC", data_type: TYPE_BOOL, dims: [ 1 ] }
]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ -1 ] } ]
"""


@pytest.fixture(scope="module")
def trained() -> Any:
    return FIL.train()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trained: Any) -> Iterator[RunningServer]:
    repo = build_repository(tmp_path_factory.mktemp("grpc-repo"))
    for name in ("decoupled_repeat", "error_model", "strings"):
        shutil.copytree(HERE / "python_models" / name, repo / name)
    for name in ("decoupled_pipeline", "repeat", "scale"):
        shutil.copytree(HERE / "ensemble_models" / name, repo / name)
    FIL.write(repo, trained, name="trees")
    write_python_model(repo, "ticker", TICKER_PY, TICKER_CONFIG.format(name="ticker"))
    write_python_model(repo, "finals", FINALS_PY, FINALS_CONFIG)
    write_python_model(repo, "bls_finals", BLS_FINALS_PY, BLS_FINALS_CONFIG)
    (repo / "finals_pipeline" / "1").mkdir(parents=True)
    (repo / "finals_pipeline" / "config.pbtxt").write_text(FINALS_PIPELINE)
    with running_server(repo, ["--grpc-infer-response-compression-level", "low"]) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _add_sub(a: np.ndarray, b: np.ndarray, module: Any = grpcclient) -> list[Any]:
    inputs = [
        module.InferInput("INPUT0", list(a.shape), "FP32"),
        module.InferInput("INPUT1", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


A = np.arange(16, dtype=np.float32).reshape(1, 16)
B = np.full((1, 16), 0.5, dtype=np.float32)


def _error(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return str(info.value.status()), str(info.value.message())


# -- health and metadata -------------------------------------------------------------------
def test_health_and_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "modelyard"
    assert {"classification", "model_repository", "statistics"} <= set(meta["extensions"])
    assert client.is_model_ready("add_sub")
    assert not client.is_model_ready("add_sub", "7")
    assert not client.is_model_ready("nope")
    assert _error(client.is_model_ready, "add_sub", "x") == (
        "StatusCode.INVALID_ARGUMENT",
        "failed to get model version from specified version string 'x' (details: stol), "
        "version should be an integral value > 0",
    )


def test_standard_health_checking(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        named = health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        assert health.Check(named, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            next(health.Watch(health_pb2.HealthCheckRequest(), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("model", ["add_sub", "strings", "trees", "decoupled_pipeline"])
def test_model_metadata_and_config_match_http(
    server: RunningServer, client: grpcclient.InferenceServerClient, model: str
) -> None:
    """ONNX, Python, FIL and ensemble models: the same metadata and config on both."""
    http = httpclient.InferenceServerClient(server.url)
    meta = client.get_model_metadata(model, as_json=True)
    expected = http.get_model_metadata(model)
    assert meta["name"] == expected["name"] == model
    assert meta["platform"] == expected["platform"]
    assert meta["versions"] == expected["versions"]
    for key in ("inputs", "outputs"):
        got = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta[key]]
        assert got == [(t["name"], t["datatype"], t["shape"]) for t in expected[key]]
    config = client.get_model_config(model).config
    http_config = http.get_model_config(model)
    assert config.name == http_config["name"] == model
    assert [t.name for t in config.input] == [t["name"] for t in http_config["input"]]
    assert config.max_batch_size == http_config.get("max_batch_size", 0)
    http.close()


def test_metadata_of_unknown_models_and_versions(
    client: grpcclient.InferenceServerClient,
) -> None:
    assert _error(client.get_model_metadata, "nope") == (
        "StatusCode.NOT_FOUND",
        "Request for unknown model: 'nope' is not found",
    )
    status, message = _error(client.get_model_config, "add_sub", "7")
    assert status == "StatusCode.NOT_FOUND"
    assert "'add_sub' version 7 is not found" in message
    assert _error(client.get_inference_statistics, "nope") == (
        "StatusCode.INVALID_ARGUMENT",
        "requested model 'nope' is not available",
    )


# -- inference -----------------------------------------------------------------------------
def _stats(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model).model_stats
    return sum(s.inference_count for s in stats), sum(s.inference_stats.fail.count for s in stats)


def test_the_same_request_over_http_and_grpc(
    server: RunningServer, client: grpcclient.InferenceServerClient, trained: Any
) -> None:
    """ONNX, FIL and Python models: identical outputs, and both count in one statistics."""
    http = httpclient.InferenceServerClient(server.url)
    x = rows(8)
    strings = np.array([b"ab", b"c\x00d", "é".encode()], dtype=object)
    cases: list[tuple[str, str, Any]] = [
        ("add_sub", "OUTPUT0", lambda m: _add_sub(A, B, m)),
        ("trees", "output__0", lambda m: [_tensor(m, "input__0", x)]),
        ("strings", "OUTPUT0", lambda m: [_tensor(m, "INPUT0", strings)]),
    ]
    for model, output, inputs in cases:
        client.infer(model, inputs(grpcclient))  # loaded, so the counts below are exact
        before, _ = _stats(client, model)
        over_grpc = client.infer(model, inputs(grpcclient)).as_numpy(output)
        over_http = http.infer(model, inputs(httpclient)).as_numpy(output)
        np.testing.assert_array_equal(over_grpc, over_http)
        batch = len(x) if model == "trees" else 1
        assert _stats(client, model)[0] == before + 2 * batch
        http_stats = http.get_inference_statistics(model)["model_stats"]
        assert sum(s["inference_count"] for s in http_stats) == before + 2 * batch
    np.testing.assert_allclose(
        client.infer("trees", [_tensor(grpcclient, "input__0", x)]).as_numpy("output__0"),
        FIL.expected(trained, x),
        rtol=1e-5,
        atol=1e-6,
    )
    answer = client.infer("strings", [_tensor(grpcclient, "INPUT0", strings)])
    assert answer.as_numpy("OUTPUT0").tolist()[:2] == [b"BA", b"D\x00C"]  # reversed, upper
    http.close()


def _tensor(module: Any, name: str, data: np.ndarray) -> Any:
    datatype = "BYTES" if data.dtype == object else {np.float32: "FP32"}[data.dtype.type]
    tensor = module.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


@pytest.mark.parametrize("wire", sorted(IDENTITY_TYPES))
def test_every_datatype_round_trips(client: grpcclient.InferenceServerClient, wire: str) -> None:
    rng = np.random.default_rng(3)
    dtype = ml_dtypes.bfloat16 if wire == "BF16" else grpcclient.triton_to_np_dtype(wire)
    data = (rng.standard_normal((2, 4)) * 50).astype(dtype)
    tensor = grpcclient.InferInput("INPUT0", [2, 4], wire)
    tensor.set_data_from_numpy(data)
    result = client.infer(f"identity_{wire.lower()}", [tensor])
    assert result.get_output("OUTPUT0").datatype == wire
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_typed_contents_and_request_parameters(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    """Tensors in the typed ``contents`` fields answer as raw ones do; priority and timeout
    are taken; answers are always in raw_output_contents."""
    request = pb.ModelInferRequest(model_name="add_sub", id="typed")
    for name, values in (("INPUT0", A), ("INPUT1", B)):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[1, 16])
        tensor.contents.fp32_contents.extend(values.ravel().tolist())
    request.parameters["priority"].uint64_param = 1
    request.parameters["timeout"].int64_param = 10_000_000
    answer = stub.ModelInfer(request, timeout=30)
    assert answer.id == "typed" and answer.model_version == "1"
    assert [o.name for o in answer.outputs] == ["OUTPUT0", "OUTPUT1"]
    out = np.frombuffer(answer.raw_output_contents[0], dtype=np.float32)
    np.testing.assert_array_equal(out, (A + B).ravel())
    strings = pb.ModelInferRequest(model_name="strings")
    strings.inputs.add(name="INPUT0", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [b"ab", b"c"]
    )
    raw = stub.ModelInfer(strings, timeout=30).raw_output_contents[0]
    assert raw == b"\x02\x00\x00\x00BA\x01\x00\x00\x00C"  # length-prefixed, as Triton


def test_classification(client: grpcclient.InferenceServerClient) -> None:
    x = np.arange(8, dtype=np.float32).reshape(1, 8)
    wanted = grpcclient.InferRequestedOutput("OUTPUT", class_count=2)
    result = client.infer("classifier", [_tensor(grpcclient, "INPUT", x)], outputs=[wanted])
    answer = result.as_numpy("OUTPUT")
    assert answer.shape == (1, 2)
    assert all(entry.count(b":") == 2 for entry in answer.ravel())  # value:index:label


def test_compressed_requests_and_answers(client: grpcclient.InferenceServerClient) -> None:
    for algorithm in ("gzip", "deflate"):
        result = client.infer("add_sub", _add_sub(A, B), compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


def test_async_infer_with_callbacks(client: grpcclient.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    for i in range(8):
        a = np.full((1, 16), i, dtype=np.float32)
        client.async_infer(
            "add_sub",
            _add_sub(a, B),
            callback=lambda result, error: answers.put((result, error)),
            request_id=str(i),
        )
    got = {}
    for _ in range(8):
        result, error = answers.get(timeout=60)
        assert error is None
        got[result.get_response().id] = result.as_numpy("OUTPUT0")
    for i in range(8):
        np.testing.assert_array_equal(got[str(i)], np.full((1, 16), i + 0.5, dtype=np.float32))


def test_aio_client(server: RunningServer) -> None:
    async def main() -> None:
        async with grpcaio.InferenceServerClient(server.grpc_url) as c:
            assert await c.is_server_ready()
            results = await asyncio.gather(
                *(c.infer("add_sub", _add_sub(A * i, B, grpcaio)) for i in range(4))
            )
            for i, result in enumerate(results):
                np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A * i - B)
            index = await c.get_model_repository_index(as_json=True)
            assert "add_sub" in {row["name"] for row in index["models"]}

    asyncio.run(main())


# -- errors: Triton's codes and texts; the server keeps serving --------------------------
def test_bad_requests_get_tritons_codes_and_texts(
    client: grpcclient.InferenceServerClient, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    assert _error(client.infer, "nope", _add_sub(A, B)) == (
        "StatusCode.NOT_FOUND",
        "Request for unknown model: 'nope' is not found",
    )
    short = _add_sub(A[:, :8], B)
    assert _error(client.infer, "add_sub", short) == (
        "StatusCode.INVALID_ARGUMENT",
        "[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model 'add_sub'. "
        "Expected [-1,16], got [1,8]. NOTE: Setting a non-zero max_batch_size in the model "
        "config requires a batch dimension to be prepended to each input shape. If you want "
        "to specify the full shape including the batch dim in your input dims config, try "
        "setting max_batch_size to zero. See the model configuration docs for more info on "
        "max_batch_size.",
    )
    ints = grpcclient.InferInput("INPUT0", [1, 16], "INT32")
    ints.set_data_from_numpy(A.astype(np.int32))
    assert _error(client.infer, "add_sub", [ints, _add_sub(A, B)[1]]) == (
        "StatusCode.INVALID_ARGUMENT",
        "[request id: <id_unknown>] inference input 'INPUT0' data-type is 'INT32', but model "
        "'add_sub' expects 'FP32'",
    )
    n = grpcclient.InferInput("N", [1], "INT32")
    n.set_data_from_numpy(np.array([2], dtype=np.int32))
    payload = grpcclient.InferInput("PAYLOAD", [1], "BYTES")
    payload.set_data_from_numpy(np.array([b"x"], dtype=object))
    assert _error(client.infer, "decoupled_repeat", [n, payload]) == (
        "StatusCode.UNIMPLEMENTED",
        "ModelInfer RPC doesn't support models with decoupled transaction policy",
    )
    mixed = pb.ModelInferRequest(model_name="add_sub", raw_input_contents=[A.tobytes()])
    mixed.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16]).contents.fp32_contents.extend(
        [0.0] * 16
    )
    mixed.inputs.add(name="INPUT1", datatype="FP32", shape=[1, 16])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(mixed, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "contents field must not be specified when using raw_input_contents for 'INPUT0' "
        "for model 'add_sub'"
    )
    reserved = pb.ModelInferRequest(model_name="add_sub")
    reserved.parameters["triton_x"].string_param = "x"
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(reserved, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reserved for Triton usage" in str(info.value.details())
    failing = grpcclient.InferInput("MODE", [1], "INT32")
    failing.set_data_from_numpy(np.array([1], dtype=np.int32))
    assert _error(client.infer, "error_model", [failing]) == (
        "StatusCode.INVALID_ARGUMENT",
        "mode 1: error response",
    )
    # and the server goes on serving
    result = client.infer("add_sub", _add_sub(A, B))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


def test_what_modelyard_does_not_serve_answers_as_triton_without_it(
    client: grpcclient.InferenceServerClient, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    assert client.get_system_shared_memory_status(as_json=True) == {}
    assert client.get_cuda_shared_memory_status(as_json=True) == {}
    client.unregister_system_shared_memory()  # nothing registered: nothing to do
    status, message = _error(client.register_system_shared_memory, "r", "/nokey", 16)
    assert status == "StatusCode.UNIMPLEMENTED" and "shared memory" in message
    status, _ = _error(client.get_system_shared_memory_status, "r")
    assert status == "StatusCode.NOT_FOUND"
    assert _error(client.get_log_settings)[0] == "StatusCode.UNIMPLEMENTED"
    assert _error(client.get_trace_settings)[0] == "StatusCode.UNIMPLEMENTED"
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryIndex(pb.RepositoryIndexRequest(repository_name="x"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert info.value.details() == "'repository_name' specification is not supported"


# -- streaming -----------------------------------------------------------------------------
class Stream:
    """A tritonclient stream whose callback results land in a queue."""

    def __init__(self, client: grpcclient.InferenceServerClient) -> None:
        self.client = client
        self.answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: self.answers.put((result, error)))

    def take(self, count: int) -> list[tuple[Any, Any]]:
        return [self.answers.get(timeout=60) for _ in range(count)]

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)


def _repeat_inputs(n: int, payload: bytes = b"x") -> list[grpcclient.InferInput]:
    count = grpcclient.InferInput("N", [1], "INT32")
    count.set_data_from_numpy(np.array([n], dtype=np.int32))
    data = grpcclient.InferInput("PAYLOAD", [1], "BYTES")
    data.set_data_from_numpy(np.array([payload], dtype=object))
    return [count, data]


def _final(result: Any) -> bool | None:
    params = result.get_response().parameters
    return params["triton_final_response"].bool_param if "triton_final_response" in params else None


def test_decoupled_stream_sends_several_responses(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    stream = Stream(client)
    try:
        client.async_stream_infer("decoupled_repeat", _repeat_inputs(3), request_id="r3")
        answers = stream.take(3)
        assert [e for _, e in answers] == [None] * 3
        assert [r.as_numpy("INDEX").tolist() for r, _ in answers] == [[0], [1], [2]]
        assert {r.get_response().id for r, _ in answers} == {"r3"}
        assert [_final(r) for r, _ in answers] == [False] * 3
        # the empty final response, asked for
        client.async_stream_infer(
            "decoupled_repeat",
            _repeat_inputs(2),
            request_id="e2",
            enable_empty_final_response=True,
        )
        answers = stream.take(3)
        assert [_final(r) for r, _ in answers] == [False, False, True]
        last = answers[-1][0].get_response()
        assert last.id == "e2" and not last.outputs
        # a plain model on a stream: one response, final
        client.async_stream_infer("add_sub", _add_sub(A, B), request_id="plain")
        [(result, error)] = stream.take(1)
        assert error is None and _final(result) is True
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
        # an ensemble with a decoupled step
        n = grpcclient.InferInput("N", [1], "INT32")
        n.set_data_from_numpy(np.array([2], dtype=np.int32))
        client.async_stream_infer("decoupled_pipeline", [n], request_id="p")
        answers = stream.take(2)
        assert sorted(r.as_numpy("Y").tolist() for r, _ in answers) == [[0.0], [2.0]]
    finally:
        stream.close()
        client.close()


def _whole_stream(
    server: RunningServer, model: str, n: int, mode: int, empty_final: bool
) -> list[tuple[str, str, str, dict[str, list[float]], bool | None]]:
    """Every response to one request, on a stream of its own that the client then closes
    (stop_stream waits for the server to end it, so nothing can arrive later): (id, model,
    version, outputs, triton_final_response) each."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    stream = Stream(client)
    inputs = [grpcclient.InferInput("N", [1], "INT32"), grpcclient.InferInput("MODE", [1], "INT32")]
    inputs[0].set_data_from_numpy(np.array([n], dtype=np.int32))
    inputs[1].set_data_from_numpy(np.array([mode], dtype=np.int32))
    try:
        client.async_stream_infer(
            model, inputs, request_id="q", enable_empty_final_response=empty_final
        )
    finally:
        stream.close()
        client.close()
    answers = []
    while not stream.answers.empty():
        result, error = stream.answers.get_nowait()
        assert error is None
        response = result.get_response()
        outputs = {o.name: result.as_numpy(o.name).tolist() for o in response.outputs}
        answers.append(
            (response.id, response.model_name, response.model_version, outputs, _final(result))
        )
    return answers


@pytest.mark.parametrize("empty_final", [False, True], ids=["plain", "empty_final"])
def test_the_final_flag_rides_on_the_last_response(
    server: RunningServer, empty_final: bool
) -> None:
    """Triton 2.51's answers (checked against it): every response names ``triton_final_response``,
    whether or not the client asked for empty final responses. A model that sends its final
    flag with its last response marks that one final and gets no empty response after it;
    one that sends the flag alone gets an empty final response only when the client asked
    (``triton_enable_empty_final_response``), else none."""
    [r0, r1] = [("q", "finals", "1", {"OUT": [float(i)]}, False) for i in range(2)]
    with_last = ("q", "finals", "1", {"OUT": [1.0]}, True)
    assert _whole_stream(server, "finals", 2, 0, empty_final) == [r0, with_last]
    # the flag alone: an empty response (the request's model name and version, here none)
    alone = [r0, r1] + ([("q", "finals", "", {}, True)] if empty_final else [])
    assert _whole_stream(server, "finals", 2, 1, empty_final) == alone
    assert _whole_stream(server, "finals", 0, 1, empty_final) == alone[2:]
    # the flag with an empty response of the model's own: that response, whatever was asked
    own_empty = ("q", "finals", "1", {}, True)
    assert _whole_stream(server, "finals", 2, 2, empty_final) == [r0, r1, own_empty]
    # an ensemble over the model: its last answer carries the flag (nothing runs after it)
    answers = _whole_stream(server, "finals_pipeline", 2, 0, empty_final)
    assert sorted(a[3]["Y"][0] for a in answers) == [0.0, 2.0]
    assert [a[4] for a in answers] == [False, True]
    assert {a[:3] for a in answers} == {("q", "finals_pipeline", "1")}


def test_generate_stream_sends_the_models_own_empty_response(server: RunningServer) -> None:
    """HTTP's generate_stream, as Triton 2.51 answers it (checked against it): one event per
    response the model sent, its own empty one included; the final flag sent alone is
    none."""

    def events(mode: int) -> list[Any]:
        answer = httpx.post(
            f"{server.base_url}/v2/models/finals/generate_stream",
            json={"N": [2], "MODE": [mode]},
            timeout=60,
        )
        assert answer.status_code == 200
        return [json.loads(line[6:]) for line in answer.text.splitlines() if line]

    named = {"model_name": "finals", "model_version": "1"}
    two = [{"OUT": float(i), **named} for i in range(2)]
    assert events(0) == two
    assert events(1) == two
    assert events(2) == [*two, named]


@pytest.mark.parametrize("use_async", [False, True], ids=["exec", "async_exec"])
def test_the_final_flag_ends_a_bls_iterator(
    client: grpcclient.InferenceServerClient, use_async: bool
) -> None:
    """Triton 2.51's BLS (checked against it): exec(decoupled=True) ends with the response
    that carried the final flag (a plain model's only one); a flag sent alone is one more,
    empty, response."""

    def responses(n: int, mode: int) -> list[float]:
        inputs = [
            grpcclient.InferInput("N", [1], "INT32"),
            grpcclient.InferInput("MODE", [1], "INT32"),
            grpcclient.InferInput("ASYNC", [1], "BOOL"),
        ]
        inputs[0].set_data_from_numpy(np.array([n], dtype=np.int32))
        inputs[1].set_data_from_numpy(np.array([mode], dtype=np.int32))
        inputs[2].set_data_from_numpy(np.array([use_async]))
        result = client.infer("bls_finals", inputs).as_numpy("Y")
        return [float(v) for v in result]

    assert responses(2, 0) == [0.0, 1.0]  # the flag with the last response
    assert responses(2, 1) == [0.0, 1.0, -1.0]  # the flag alone
    assert responses(2, 2) == [0.0, 1.0, -1.0]  # the flag with an empty response
    assert responses(0, 1) == [-1.0]
    assert responses(0, -1) == [6.0]  # a plain model: its one response


def test_errors_inside_a_stream_leave_it_open(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    """Triton's answers: an error is a message on the stream (the model's own names the
    model and is final), and the stream goes on with the next request."""

    def repeat(n: int, request_id: str, model: str = "decoupled_repeat") -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name=model, id=request_id)
        request.inputs.add(name="N", datatype="INT32", shape=[1]).contents.int_contents.append(n)
        request.inputs.add(
            name="PAYLOAD", datatype="BYTES", shape=[1]
        ).contents.bytes_contents.append(b"fail_after" if request_id == "after" else b"x")
        return request

    requests = [repeat(-1, "neg"), repeat(1, "unknown", "nope"), repeat(2, "after")]
    answers = list(stub.ModelStreamInfer(iter(requests), timeout=60))
    by_id: dict[str, list[pb.ModelStreamInferResponse]] = {}
    for answer in answers:
        by_id.setdefault(answer.infer_response.id, []).append(answer)
    [neg] = by_id["neg"]
    assert neg.error_message == "N must not be negative, got -1"
    assert neg.infer_response.model_name == "decoupled_repeat"
    assert neg.infer_response.parameters["triton_final_response"].bool_param
    [unknown] = by_id["unknown"]
    assert unknown.error_message == "Request for unknown model: 'nope' is not found"
    assert unknown.infer_response.model_name == ""
    after = by_id["after"]
    assert [a.error_message for a in after] == ["", "", "failed after 2 responses"]


def test_a_client_that_goes_away_cancels_the_models_work(
    server: RunningServer, client: grpcclient.InferenceServerClient, tmp_path: Path
) -> None:
    marker = tmp_path / "cancelled"
    local = grpcclient.InferenceServerClient(server.grpc_url)
    stream = Stream(local)
    n = grpcclient.InferInput("N", [1], "INT32")
    n.set_data_from_numpy(np.array([100_000], dtype=np.int32))
    local.async_stream_infer("ticker", [n], request_id="t", parameters={"marker": str(marker)})
    assert all(error is None for _, error in stream.take(3))
    stream.close(cancel=True)
    local.close()
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "cancelled"
    # the cancelled request counts as failed; the model serves the next one
    _, failed = _stats(client, "ticker")
    assert failed >= 1
    stream = Stream(client)
    try:
        n.set_data_from_numpy(np.array([2], dtype=np.int32))
        client.async_stream_infer("ticker", [n], request_id="again")
        assert [r.as_numpy("OUT").tolist() for r, _ in stream.take(2)] == [[0], [1]]
    finally:
        stream.close()


def test_streaming_with_the_aio_client(server: RunningServer) -> None:
    async def main() -> list[Any]:
        async with grpcaio.InferenceServerClient(server.grpc_url) as c:

            async def requests() -> Any:
                yield {
                    "model_name": "decoupled_repeat",
                    "inputs": _aio_repeat(2),
                    "request_id": "a",
                }

            return [item async for item in c.stream_infer(requests())]

    answers = asyncio.run(main())
    assert [error for _, error in answers] == [None, None]
    assert [result.as_numpy("INDEX").tolist() for result, _ in answers] == [[0], [1]]


def _aio_repeat(n: int) -> list[grpcaio.InferInput]:
    count = grpcaio.InferInput("N", [1], "INT32")
    count.set_data_from_numpy(np.array([n], dtype=np.int32))
    data = grpcaio.InferInput("PAYLOAD", [1], "BYTES")
    data.set_data_from_numpy(np.array([b"x"], dtype=object))
    return [count, data]


def test_metrics_count_grpc_requests(server: RunningServer) -> None:
    """One set of counters: Triton's nv_inference_* families count gRPC requests too."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("nv_inference_request_success{") and 'model="trees"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 3


def test_concurrent_streams_and_unary_calls(server: RunningServer) -> None:
    """Many clients at once (threads, each its own channel): every answer right."""
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with grpcclient.InferenceServerClient(server.grpc_url) as c:
                for j in range(5):
                    a = np.full((1, 16), i * 10 + j, dtype=np.float32)
                    out = c.infer("add_sub", _add_sub(a, B)).as_numpy("OUTPUT0")
                    np.testing.assert_array_equal(out, a + B)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
