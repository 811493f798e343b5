"""The client half of the v2 codec (``modelyard test``) against the server half: whatever one
side writes, the other reads back exactly, for the datatypes JSON cannot carry."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from modelyard.types import InferResponse, Tensor
from modelyard.wire.v2 import (
    decode_infer_request,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
)


def _bytes(*items: bytes) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


def _tensors() -> list[Tensor]:
    return [
        Tensor("F", "FP32", [1, 3], np.array([[0.1, math.nan, -math.inf]], dtype=np.float32)),
        Tensor("H", "BF16", [2], np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)),
        Tensor("S", "BYTES", [3], _bytes(b"ok", b"\xff\xfe not utf-8", b"nul\x00inside")),
        Tensor("I", "INT64", [2], np.array([-(2**63), 2**63 - 1], dtype=np.int64)),
    ]


def _same(got: Tensor, want: Tensor) -> None:
    assert (got.name, got.datatype, list(got.shape)) == (want.name, want.datatype, want.shape)
    if want.datatype == "BYTES":
        assert got.data.tolist() == want.data.tolist()
    else:
        np.testing.assert_array_equal(got.data.view(np.uint8), want.data.view(np.uint8))


def test_a_request_the_client_encodes_is_what_the_server_decodes() -> None:
    body, head = encode_infer_request(_tensors(), ["OUT"], {"sequence_id": 7})
    request = decode_infer_request(body, head, "m", "")
    for got, want in zip(request.inputs, _tensors(), strict=True):
        _same(got, want)
    assert [o.name for o in request.outputs] == ["OUT"]
    assert request.outputs[0].binary_data
    assert request.parameters["sequence_id"] == 7


def test_without_named_outputs_every_output_is_asked_for_as_binary() -> None:
    body, head = encode_infer_request(_tensors()[:1], [])
    assert decode_infer_request(body, head, "m", "").binary_data_output


def test_a_binary_response_decodes_exactly() -> None:
    body, head = encode_infer_response(InferResponse("m", "1", _tensors()), None, True)
    for got, want in zip(decode_infer_response(body, head), _tensors(), strict=True):
        _same(got, want)


def test_a_json_response_decodes_including_bytes_that_are_not_utf8() -> None:
    tensors = [t for t in _tensors() if t.datatype != "BF16"]  # BF16 cannot travel as JSON
    body, head = encode_infer_response(InferResponse("m", "1", tensors), None, False)
    assert head is None
    for got, want in zip(decode_infer_response(body, head), tensors, strict=True):
        _same(got, want)
