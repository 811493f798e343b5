"""The gRPC codec: Triton's messages <-> modelyard's types, with Triton 2.51's texts (recorded
from its gRPC endpoint), and the error mapping to status codes."""

from __future__ import annotations

import struct

import grpc
import ml_dtypes
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import deserialize_bytes_tensor

from modelyard.errors import (
    InsufficientMemory,
    InvalidArgument,
    ModelNotFound,
    ModelTooLarge,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unsupported,
)
from modelyard.protocol.errors import grpc_error
from modelyard.protocol.grpc._codec import (
    check_version,
    decode_request,
    empty_final,
    encode_response,
    encode_stream_response,
    stream_error,
)
from modelyard.types import InferResponse, Tensor


def _request(**kwargs: object) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="m", **kwargs)  # type: ignore[arg-type]


def _invalid(message: pb.ModelInferRequest) -> str:
    with pytest.raises(InvalidArgument) as info:
        decode_request(message)
    return str(info.value)


def test_raw_contents_decode_every_datatype() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(4, dtype=ml_dtypes.bfloat16)
    message = _request(id="r", raw_input_contents=[a.tobytes(), b.tobytes()])
    message.inputs.add(name="A", datatype="FP32", shape=[2, 3])
    message.inputs.add(name="B", datatype="BF16", shape=[4])
    request = decode_request(message)
    assert request.id == "r" and [t.name for t in request.inputs] == ["A", "B"]
    np.testing.assert_array_equal(request.inputs[0].data, a)
    assert request.inputs[1].data.dtype == ml_dtypes.bfloat16
    assert request.outputs is None


def test_bytes_are_length_prefixed_both_ways() -> None:
    raw = struct.pack("<I", 2) + b"ab" + struct.pack("<I", 3) + b"c\x00d"
    message = _request(raw_input_contents=[raw])
    message.inputs.add(name="S", datatype="BYTES", shape=[2])
    request = decode_request(message)
    assert request.inputs[0].data.tolist() == [b"ab", b"c\x00d"]
    answer = encode_response(InferResponse("m", "1", [request.inputs[0]]))
    assert answer.raw_output_contents[0] == raw
    assert deserialize_bytes_tensor(answer.raw_output_contents[0]).tolist() == [b"ab", b"c\x00d"]


def test_typed_contents() -> None:
    message = _request()
    message.inputs.add(name="I", datatype="INT16", shape=[3]).contents.int_contents.extend(
        [1, -2, 3]
    )
    message.inputs.add(name="B", datatype="BOOL", shape=[2]).contents.bool_contents.extend(
        [True, False]
    )
    message.inputs.add(name="S", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    ints, bools, strings = decode_request(message).inputs
    assert ints.data.dtype == np.int16 and ints.data.tolist() == [1, -2, 3]
    assert bools.data.tolist() == [True, False]
    assert strings.data.tolist() == [b"x"]


def test_tritons_texts_for_malformed_tensors() -> None:
    both = _request(raw_input_contents=[b"\0" * 4])
    both.inputs.add(name="A", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    assert _invalid(both) == (
        "contents field must not be specified when using raw_input_contents for 'A' for model 'm'"
    )
    wrong = _request()
    wrong.inputs.add(name="A", datatype="FP32", shape=[2]).contents.int_contents.extend([1, 2])
    assert _invalid(wrong) == (
        "unexpected explicit tensor data for input tensor 'A' for model 'm' of type 'INT32', "
        "expected datatype 'FP32'"
    )
    short = _request()
    short.inputs.add(name="A", datatype="FP32", shape=[16]).contents.fp32_contents.extend([1] * 15)
    assert _invalid(short) == (
        "[request id: <id_unknown>] input byte size mismatch for input 'A' for model 'm'. "
        "Expected 64, got 60"
    )
    none = _request()
    none.inputs.add(name="A", datatype="FP32", shape=[1])
    assert _invalid(none) == "unable to find data for input tensor 'A' for model 'm' in request."
    truncated = _request(raw_input_contents=[struct.pack("<I", 5) + b"ab"])
    truncated.inputs.add(name="S", datatype="BYTES", shape=[1])
    assert _invalid(truncated) == (
        "incomplete string data for inference input 'S', expecting string of length 5 but only "
        "2 bytes available"
    )
    shm = _request()
    shm.inputs.add(name="A", datatype="FP32", shape=[1]).parameters[
        "shared_memory_region"
    ].string_param = "r"
    assert _invalid(shm) == (
        "'shared_memory_byte_size' must be specified along with 'shared_memory_region' "
        "parameter for tensor 'A'"
    )


def test_request_parameters() -> None:
    message = _request()
    message.parameters["priority"].uint64_param = 2
    message.parameters["timeout"].int64_param = 1000
    message.parameters["custom"].string_param = "v"
    message.parameters["triton_enable_empty_final_response"].bool_param = True
    request = decode_request(message)
    assert request.parameters == {"priority": 2, "timeout": 1000, "custom": "v"}
    bad = _request()
    bad.parameters["timeout"].string_param = "x"
    assert _invalid(bad) == "invalid value type for 'timeout' parameter, expected int64_param."
    reserved = _request()
    reserved.parameters["triton_x"].bool_param = True
    assert "reserved for Triton usage" in _invalid(reserved)


def test_requested_outputs_and_classification() -> None:
    message = _request()
    out = message.outputs.add(name="O")
    out.parameters["classification"].int64_param = 3
    out.parameters["binary_data"].bool_param = False  # meaningless on gRPC: ignored
    [requested] = decode_request(message).outputs or []
    assert requested.name == "O" and requested.class_count == 3 and not requested.parameters


def test_versions() -> None:
    assert check_version("") == "" and check_version("3") == "3"
    for bad in ("x", "0", "-1"):
        with pytest.raises(InvalidArgument, match="version should be an integral value > 0"):
            check_version(bad)


def test_stream_messages() -> None:
    tensor = Tensor("O", "INT32", [1], np.array([7], dtype=np.int32))
    answer = encode_stream_response(InferResponse("m", "1", [tensor], id="r"), final=False)
    assert answer.infer_response.id == "r"
    assert not answer.infer_response.parameters["triton_final_response"].bool_param
    error = stream_error("boom", "r", model="m")
    assert error.error_message == "boom" and error.infer_response.model_name == "m"
    assert error.infer_response.parameters["triton_final_response"].bool_param
    assert not stream_error("bad", "r").infer_response.model_name
    final = empty_final("m", "2", "r")
    assert final.infer_response.parameters["triton_final_response"].bool_param
    assert not final.infer_response.outputs
    assert (final.infer_response.model_name, final.infer_response.model_version) == ("m", "2")
    last = encode_stream_response(InferResponse("m", "1", [tensor], id="r"), final=True)
    assert last.infer_response.parameters["triton_final_response"].bool_param


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelNotFound("m"), grpc.StatusCode.NOT_FOUND),
        (Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (InsufficientMemory("x"), grpc.StatusCode.UNAVAILABLE),
        (ModelTooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Unsupported("x"), grpc.StatusCode.UNIMPLEMENTED),
        (Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL),
    ],
)
def test_error_tree_to_status_codes(error: BaseException, code: grpc.StatusCode) -> None:
    got, message = grpc_error(error, "m")
    assert got == code
    if code == grpc.StatusCode.INTERNAL:
        assert "RuntimeError: bug" in message  # a bug: its type named, the traceback logged
    else:
        assert message == str(error)  # the message HTTP sends
