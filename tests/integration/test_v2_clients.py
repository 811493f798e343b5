"""tritonclient (sync, async_infer, aio) against a real `modelyard serve` process."""

from __future__ import annotations

import asyncio

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from modelyard.testing import RunningServer
from tests.integration.conftest import IDENTITY_TYPES


@pytest.fixture(scope="module")
def client(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url, concurrency=4)


def _add_sub_inputs(
    a: np.ndarray, b: np.ndarray, binary: tuple[bool, bool] = (True, True)
) -> list[httpclient.InferInput]:
    inputs = [
        httpclient.InferInput("INPUT0", list(a.shape), "FP32"),
        httpclient.InferInput("INPUT1", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a, binary_data=binary[0])
    inputs[1].set_data_from_numpy(b, binary_data=binary[1])
    return inputs


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "modelyard"
    assert {"binary_tensor_data", "statistics", "classification", "model_repository"} <= set(
        meta["extensions"]
    )


def test_model_metadata_and_ready(client: httpclient.InferenceServerClient) -> None:
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("add_sub", "7")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("add_sub")
    assert meta == {
        "name": "add_sub",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]},
            {"name": "INPUT1", "datatype": "FP32", "shape": [-1, 16]},
        ],
        "outputs": [
            {"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 16]},
            {"name": "OUTPUT1", "datatype": "FP32", "shape": [-1, 16]},
        ],
    }


def test_autocompleted_config(client: httpclient.InferenceServerClient) -> None:
    """mlp has no config.pbtxt: Triton's rules make it batchable with max_batch_size 4."""
    config = client.get_model_config("mlp")
    assert config["name"] == "mlp"
    assert config["max_batch_size"] == 4
    assert "dynamic_batching" in config
    assert config["input"][0]["name"] == "INPUT"
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert [int(d) for d in config["input"][0]["dims"]] == [64]
    assert [int(d) for d in config["output"][0]["dims"]] == [10]
    assert config["instance_group"][0]["kind"] == "KIND_CPU"


@pytest.mark.parametrize("binary", [(True, True), (False, False), (True, False)])
def test_infer_add_sub(client: httpclient.InferenceServerClient, binary: tuple[bool, bool]) -> None:
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    b = np.ones((2, 16), dtype=np.float32)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary[0]),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary[1]),
    ]
    result = client.infer(
        "add_sub", _add_sub_inputs(a, b, binary), outputs=outputs, request_id="req-7"
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response["id"] == "req-7"
    assert response["model_name"] == "add_sub"
    assert response["model_version"] == "1"


def test_requested_subset_of_outputs(client: httpclient.InferenceServerClient) -> None:
    a = np.full((1, 16), 3, dtype=np.float32)
    result = client.infer(
        "add_sub",
        _add_sub_inputs(a, a),
        outputs=[httpclient.InferRequestedOutput("OUTPUT1")],
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros((1, 16), np.float32))
    assert result.as_numpy("OUTPUT0") is None
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT1"]


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_with_nul(client: httpclient.InferenceServerClient, binary: bool) -> None:
    data = np.array([[b"a\x00b", b"", b"\x00\x00", "héllo".encode()]], dtype=object)
    inp = httpclient.InferInput("INPUT0", [1, 4], "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary)
    result = client.infer(
        "echo_bytes", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary)]
    )
    out = result.as_numpy("OUTPUT0")
    assert out.shape == (1, 4)
    assert [bytes(x) if not isinstance(x, str) else x.encode() for x in out.ravel()] == list(
        data.ravel()
    )


@pytest.mark.parametrize("wire", sorted(IDENTITY_TYPES))
def test_every_datatype_round_trips(client: httpclient.InferenceServerClient, wire: str) -> None:
    rng = np.random.default_rng(3)
    if wire == "BOOL":
        data = rng.integers(0, 2, (2, 4)).astype(bool)
    elif wire == "BF16":
        data = rng.standard_normal((2, 4)).astype(ml_dtypes.bfloat16)
    else:
        from modelyard.datatypes import numpy_dtype

        data = (rng.standard_normal((2, 4)) * 50).astype(numpy_dtype(wire))
    binary_modes = [True] if wire in ("FP16", "BF16") else [True, False]  # as Triton: no JSON
    for binary in binary_modes:
        inp = httpclient.InferInput("INPUT0", [2, 4], wire)
        inp.set_data_from_numpy(data, binary_data=binary)
        result = client.infer(
            f"identity_{wire.lower()}",
            [inp],
            outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)],
        )
        out = result.as_numpy("OUTPUT0")
        assert out.dtype == data.dtype
        np.testing.assert_array_equal(out, data)


def test_classification(client: httpclient.InferenceServerClient) -> None:
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    inp = httpclient.InferInput("INPUT", [2, 8], "FP32")
    inp.set_data_from_numpy(x)
    raw = client.infer("classifier", [inp]).as_numpy("OUTPUT")
    result = client.infer(
        "classifier", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT", class_count=2)]
    )
    top = result.as_numpy("OUTPUT")
    assert top.shape == (2, 2)
    labels = ["setosa", "versicolor", "virginica"]
    for row, scores in zip(top, raw, strict=True):
        order = np.argsort(-scores)[:2]
        parts = [entry.decode().split(":") for entry in row]
        assert [int(p[1]) for p in parts] == list(order)
        assert [p[2] for p in parts] == [labels[i] for i in order]
        np.testing.assert_allclose([float(p[0]) for p in parts], scores[order], rtol=1e-5)


def test_async_infer_many(client: httpclient.InferenceServerClient) -> None:
    a = np.ones((1, 16), dtype=np.float32)
    handles = [client.async_infer("add_sub", _add_sub_inputs(a * i, a)) for i in range(20)]
    for i, handle in enumerate(handles):
        np.testing.assert_array_equal(handle.get_result().as_numpy("OUTPUT0"), a * i + a)


def test_aio_client(server: RunningServer) -> None:
    async def main() -> None:
        async with aioclient.InferenceServerClient(server.url) as aio:
            assert await aio.is_server_ready()
            assert (await aio.get_model_metadata("mlp"))["name"] == "mlp"
            x = np.ones((3, 64), dtype=np.float32)
            inp = aioclient.InferInput("INPUT", [3, 64], "FP32")
            inp.set_data_from_numpy(x)
            results = await asyncio.gather(*(aio.infer("mlp", [inp]) for _ in range(8)))
            outs = [r.as_numpy("OUTPUT") for r in results]
            assert all(o.shape == (3, 10) for o in outs)
            np.testing.assert_array_equal(outs[0], outs[-1])

    asyncio.run(main())


def test_versions(client: httpclient.InferenceServerClient) -> None:
    """version_policy specific [1, 3]: version 2 exists on disk but is not served."""
    assert client.is_model_ready("versioned", "1")
    assert client.is_model_ready("versioned", "3")
    assert not client.is_model_ready("versioned", "2")
    assert client.get_model_metadata("versioned")["versions"] == ["1", "3"]
    a = np.ones(16, dtype=np.float32)
    result = client.infer("versioned", _add_sub_inputs(a, a))
    assert result.get_response()["model_version"] == "3"
    result = client.infer("versioned", _add_sub_inputs(a, a), model_version="1")
    assert result.get_response()["model_version"] == "1"
    with pytest.raises(InferenceServerException) as info:
        client.infer("versioned", _add_sub_inputs(a, a), model_version="2")
    assert info.value.status() == "404"
    assert "Request for unknown model: 'versioned' version 2 is not found" in info.value.message()


def test_statistics_by_value(server: RunningServer) -> None:
    """A model no other test uses gets exactly N requests; its counters say so."""
    client = httpclient.InferenceServerClient(server.url)
    model = "stats_probe"
    with pytest.raises(InferenceServerException, match="is not available"):
        client.get_inference_statistics(model)  # on-demand: not loaded, nothing to show yet
    data = np.ones((3, 4), dtype=np.int16)
    for _ in range(5):
        inp = httpclient.InferInput("INPUT0", [3, 4], "INT16")
        inp.set_data_from_numpy(data)
        client.infer(model, [inp])
    bad = httpclient.InferInput("INPUT0", [3, 5], "INT16")
    bad.set_data_from_numpy(np.ones((3, 5), dtype=np.int16))
    with pytest.raises(InferenceServerException):
        client.infer(model, [bad])
    stats = client.get_inference_statistics(model, "1")["model_stats"][0]
    assert stats["name"] == model and stats["version"] == "1"
    assert stats["inference_count"] == 15  # 5 requests of batch 3
    assert stats["execution_count"] == 5
    assert stats["last_inference"] > 0
    inf = stats["inference_stats"]
    assert inf["success"]["count"] == 5 and inf["success"]["ns"] > 0
    assert inf["fail"]["count"] == 0  # as in Triton, refused requests are not failures
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inf[key]["count"] == 5
    assert inf["compute_infer"]["ns"] > 0
    assert stats["batch_stats"] == [
        {
            "batch_size": 3,
            "compute_input": {"count": 5, "ns": stats["batch_stats"][0]["compute_input"]["ns"]},
            "compute_infer": {"count": 5, "ns": stats["batch_stats"][0]["compute_infer"]["ns"]},
            "compute_output": {"count": 5, "ns": stats["batch_stats"][0]["compute_output"]["ns"]},
        }
    ]
    assert stats["batch_stats"][0]["compute_infer"]["ns"] > 0
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} >= {"add_sub", model, "mlp"}
