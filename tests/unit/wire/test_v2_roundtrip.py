"""Round trips through tritonclient's own encoder and decoder: what users' clients send and read."""

from __future__ import annotations

import json
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient

from modelyard.errors import InvalidArgument
from modelyard.types import InferResponse, RequestedOutput, Tensor
from modelyard.wire.v2 import decode_infer_request, encode_infer_response

RNG = np.random.default_rng(7)

NUMERIC = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 255, 7], [1, 2, 3]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535, 7], [1, 2, 3]], dtype=np.uint16),
    "UINT32": np.array([[0, 2**32 - 1, 7], [1, 2, 3]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**64 - 1, 7], [1, 2, 3]], dtype=np.uint64),
    "INT8": np.array([[-128, 127, 0], [1, -2, 3]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 2**15 - 1, 0], [1, -2, 3]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1, 0], [1, -2, 3]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1, 0], [1, -2, 3]], dtype=np.int64),
    "FP32": RNG.standard_normal((2, 3)).astype(np.float32),
    "FP64": RNG.standard_normal((2, 3)),
}
BINARY_ONLY = {
    "FP16": RNG.standard_normal((2, 3)).astype(np.float16),
    "BF16": RNG.standard_normal((2, 3)).astype(ml_dtypes.bfloat16),
}
STRINGS = np.array(
    [[b"a\x00b", b"", b"\x00"], [b"hello", "héllo".encode(), b"x" * 300]], dtype=object
)


def _body(
    inputs: list[httpclient.InferInput],
    outputs: list[httpclient.InferRequestedOutput] | None = None,
    **kwargs: Any,
) -> tuple[bytes, int | None]:
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs, **kwargs
    )
    return body, json_size


def _input(name: str, datatype: str, array: np.ndarray[Any, Any], binary: bool) -> Any:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _check_equal(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert got.dtype == object
        assert got.tolist() == want.tolist()
    else:
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()


# ---- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("datatype", sorted(NUMERIC))
def test_numeric_inputs(datatype: str, binary: bool) -> None:
    array = NUMERIC[datatype]
    body, hl = _body([_input("X", datatype, array, binary)])
    request = decode_infer_request(body, hl, "m", "")
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("X", datatype, [2, 3])
    _check_equal(tensor.data, array)


@pytest.mark.parametrize("datatype", sorted(BINARY_ONLY))
def test_fp16_and_bf16_inputs_as_binary(datatype: str) -> None:
    array = BINARY_ONLY[datatype]
    body, hl = _body([_input("X", datatype, array, True)])
    (tensor,) = decode_infer_request(body, hl, "m", "").inputs
    _check_equal(tensor.data, array)


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_inputs_keep_nul_bytes(binary: bool) -> None:
    array = STRINGS if binary else STRINGS[:, :2]  # JSON needs UTF-8
    body, hl = _body([_input("S", "BYTES", array, binary)])
    (tensor,) = decode_infer_request(body, hl, "m", "").inputs
    _check_equal(tensor.data, array)


def test_binary_inputs_are_zero_copy_views_of_the_body() -> None:
    array = NUMERIC["FP32"]
    body, hl = _body([_input("X", "FP32", array, True)])
    (tensor,) = decode_infer_request(memoryview(body), hl, "m", "").inputs
    assert not tensor.data.flags.owndata
    assert tensor.data.base is not None


def test_mixed_json_and_binary_inputs_in_one_request() -> None:
    inputs = [
        _input("A", "FP32", NUMERIC["FP32"], True),
        _input("B", "INT64", NUMERIC["INT64"], False),
        _input("C", "BYTES", STRINGS, True),
        _input("D", "BF16", BINARY_ONLY["BF16"], True),
        _input("E", "BOOL", NUMERIC["BOOL"], False),
    ]
    outputs = [
        httpclient.InferRequestedOutput("P", binary_data=True),
        httpclient.InferRequestedOutput("Q", binary_data=False, class_count=3),
    ]
    body, hl = _body(inputs, outputs, request_id="r-1", sequence_id=9, priority=2)
    request = decode_infer_request(body, hl, "m", "3")
    assert (request.model_name, request.model_version, request.id) == ("m", "3", "r-1")
    got = {t.name: t.data for t in request.inputs}
    assert list(got) == ["A", "B", "C", "D", "E"]
    for name, want in zip(
        "ABCDE",
        [NUMERIC["FP32"], NUMERIC["INT64"], STRINGS, BINARY_ONLY["BF16"], NUMERIC["BOOL"]],
        strict=True,
    ):
        _check_equal(got[name], want)
    assert request.outputs == [
        RequestedOutput("P", binary_data=True),
        RequestedOutput("Q", binary_data=False, class_count=3),
    ]
    assert request.parameters == {
        "sequence_id": 9,
        "sequence_start": False,
        "sequence_end": False,
        "priority": 2,
    }
    assert request.binary_data_output is False


def test_no_outputs_means_all_outputs_binary_with_tritonclient() -> None:
    body, hl = _body([_input("A", "FP32", NUMERIC["FP32"], False)], parameters={"k": "v"})
    request = decode_infer_request(body, hl, "m", "")
    assert request.outputs is None
    assert request.binary_data_output is True
    assert request.parameters == {"k": "v"}


def test_nested_json_data_is_flattened() -> None:
    doc = {
        "inputs": [
            {"name": "X", "shape": [2, 3], "datatype": "INT32", "data": [[1, 2, 3], [4, [5, 6]]]},
            {"name": "S", "shape": [2], "datatype": "BYTES", "data": [["a"], ["b"]]},
        ]
    }
    request = decode_infer_request(json.dumps(doc).encode(), None, "m", "")
    _check_equal(request.inputs[0].data, np.arange(1, 7, dtype=np.int32).reshape(2, 3))
    _check_equal(request.inputs[1].data, np.array([b"a", b"b"], dtype=object))


def test_shape_and_element_count_must_agree() -> None:
    doc = {"inputs": [{"name": "X", "shape": [4], "datatype": "FP32", "data": [1, 2, 3]}]}
    with pytest.raises(InvalidArgument, match="Shape does not match true shape of 'data'"):
        decode_infer_request(json.dumps(doc).encode(), None, "m", "")


def test_binary_size_must_match_shape() -> None:
    tensor = _input("X", "FP32", NUMERIC["FP32"], True)
    tensor.set_shape([7])
    body, hl = _body([tensor])
    with pytest.raises(InvalidArgument) as info:
        decode_infer_request(body, hl, "m", "")
    assert info.value.message == (
        "[request id: <id_unknown>] input byte size mismatch for input 'X' for model 'm'. "
        "Expected 28, got 24"
    )


# ---- responses -------------------------------------------------------------------------------


def _parse(body: bytes, header_length: int | None) -> Any:
    return httpclient.InferResult.from_response_body(body, False, header_length)


def _response(*tensors: Tensor, **kwargs: Any) -> InferResponse:
    return InferResponse("m", "2", list(tensors), **kwargs)


def _tensor(name: str, datatype: str, array: np.ndarray[Any, Any]) -> Tensor:
    return Tensor(name, datatype, list(array.shape), array)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("datatype", sorted(NUMERIC))
def test_numeric_outputs(datatype: str, binary: bool) -> None:
    array = NUMERIC[datatype]
    body, hl = encode_infer_response(_response(_tensor("Y", datatype, array)), None, binary)
    assert (hl is not None) == binary
    _check_equal(_parse(body, hl).as_numpy("Y"), array)


@pytest.mark.parametrize("datatype", sorted(BINARY_ONLY))
def test_fp16_and_bf16_outputs_as_binary(datatype: str) -> None:
    array = BINARY_ONLY[datatype]
    requested = [RequestedOutput("Y", binary_data=True)]
    body, hl = encode_infer_response(_response(_tensor("Y", datatype, array)), requested, False)
    _check_equal(_parse(body, hl).as_numpy("Y"), array)


@pytest.mark.parametrize("datatype", sorted(BINARY_ONLY))
def test_fp16_and_bf16_outputs_refuse_json(datatype: str) -> None:
    array = BINARY_ONLY[datatype]
    with pytest.raises(InvalidArgument, match=f"sending {datatype} data via JSON"):
        encode_infer_response(_response(_tensor("Y", datatype, array)), None, False)


def test_bytes_outputs() -> None:
    body, hl = encode_infer_response(_response(_tensor("S", "BYTES", STRINGS)), None, True)
    _check_equal(_parse(body, hl).as_numpy("S"), STRINGS)
    utf8 = STRINGS[:, :2]
    body, hl = encode_infer_response(_response(_tensor("S", "BYTES", utf8)), None, False)
    assert hl is None
    got = _parse(body, hl).as_numpy("S")  # tritonclient returns JSON strings as str
    assert [s.encode() for s in got.ravel().tolist()] == utf8.ravel().tolist()


def test_non_utf8_bytes_in_json_are_copied_raw_like_triton() -> None:
    array = np.array([b"\xff\xfe", b"ok\x01"], dtype=object)
    body, hl = encode_infer_response(_response(_tensor("S", "BYTES", array)), None, False)
    assert hl is None
    assert body.endswith(b'"data":["\xff\xfe","ok\\u0001"]}]}')


def test_mixed_outputs_follow_response_order_and_triton_defaults() -> None:
    a, b, c = NUMERIC["FP32"], NUMERIC["INT8"], STRINGS
    response = _response(
        _tensor("A", "FP32", a), _tensor("B", "INT8", b), _tensor("C", "BYTES", c), id="x"
    )
    # named with no 'binary_data' -> JSON (Triton's rule), unnamed -> request default (binary)
    requested = [RequestedOutput("C", binary_data=True), RequestedOutput("B")]
    body, hl = encode_infer_response(response, requested, True)
    assert hl is not None
    header = json.loads(body[:hl])
    assert list(header) == ["id", "model_name", "model_version", "outputs"]
    assert [o["name"] for o in header["outputs"]] == ["A", "B", "C"]
    assert "data" in header["outputs"][1]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": a.nbytes}
    result = _parse(body, hl)
    for name, want in zip("ABC", [a, b, c], strict=True):
        _check_equal(result.as_numpy(name), want)
    assert result.get_response()["id"] == "x"


def test_response_keys_in_triton_order() -> None:
    response = _response(_tensor("A", "INT32", NUMERIC["INT32"]), parameters={"p": 1})
    body, hl = encode_infer_response(response, None, False)
    assert hl is None
    assert body.startswith(b'{"model_name":"m","model_version":"2","parameters":{"p":1},')
    assert b'"outputs":[{"name":"A","datatype":"INT32","shape":[2,3],"data":[' in body


def test_empty_binary_output_needs_no_header_length() -> None:
    empty = np.empty((0, 3), dtype=np.float32)
    body, hl = encode_infer_response(_response(_tensor("E", "FP32", empty)), None, True)
    assert hl is None
    assert b'"parameters":{"binary_data_size":0}' in body
    _check_equal(_parse(body, hl).as_numpy("E"), empty)


def test_non_contiguous_outputs() -> None:
    array = np.arange(12, dtype=np.int16).reshape(3, 4).T
    for binary in (False, True):
        body, hl = encode_infer_response(_response(_tensor("T", "INT16", array)), None, binary)
        _check_equal(_parse(body, hl).as_numpy("T"), np.ascontiguousarray(array))


def test_nan_and_infinity_are_written_like_triton() -> None:
    array = np.array([np.nan, np.inf, -np.inf, 0.5], dtype=np.float32)
    body, _ = encode_infer_response(_response(_tensor("F", "FP32", array)), None, False)
    assert body.endswith(b'"data":[NaN,Infinity,-Infinity,0.5]}]}')
    got = _parse(body, None).as_numpy("F")
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf and got[3] == 0.5


def test_full_round_trip_client_to_client() -> None:
    x = NUMERIC["FP32"]
    inputs = [_input("INPUT0", "FP32", x, True), _input("INPUT1", "FP32", x, False)]
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    body, hl = _body(inputs, outputs, request_id="42")
    request = decode_infer_request(body, hl, "add_sub", "")
    a, b = (t.data for t in request.inputs)
    response = InferResponse(
        "add_sub",
        "1",
        [_tensor("OUTPUT0", "FP32", a + b), _tensor("OUTPUT1", "FP32", a - b)],
        id=request.id,
    )
    out, out_hl = encode_infer_response(response, request.outputs, request.binary_data_output)
    result = _parse(out, out_hl)
    _check_equal(result.as_numpy("OUTPUT0"), x + x)
    _check_equal(result.as_numpy("OUTPUT1"), x - x)


@pytest.mark.parametrize("depth", [1_100, 100_000])
def test_json_nested_past_the_parsers_depth_is_invalid_argument(depth: int) -> None:
    """Past orjson's depth limit the fallback decoder recursed out (RecursionError: 500)."""
    body = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        decode_infer_request(body, None, "m", "")
