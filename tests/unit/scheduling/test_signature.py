"""Request validation against a model's config, with Triton's messages."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.errors import InvalidArgument
from modelyard.scheduling.signature import (
    deduce_raw_input,
    runtime_shape,
    signature_of,
    validate_inputs,
)
from modelyard.types import Tensor

CONFIG = """
name: "m"
max_batch_size: 4
input [
  { name: "A", data_type: TYPE_FP32, dims: [ -1, 3 ] },
  { name: "B", data_type: TYPE_STRING, dims: [ 1 ], optional: true },
  { name: "R", data_type: TYPE_INT32, dims: [ 6 ], reshape: { shape: [ 2, 3 ] }, optional: true }
]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ 3 ] } ]
"""

SIG = signature_of(text_format.Parse(CONFIG, mc.ModelConfig()))


def _t(name: str, datatype: str, shape: list[int]) -> Tensor:
    return Tensor(name, datatype, shape, np.zeros(shape, dtype=np.float32))


def test_valid_request_returns_batch_size() -> None:
    assert validate_inputs(SIG, [_t("A", "FP32", [2, 5, 3])], None) == 2


def test_optional_inputs_may_be_left_out_but_required_may_not() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_inputs(SIG, [_t("B", "BYTES", [1, 1])], "x")
    assert info.value.message == (
        "[request id: x] expected 1 inputs but got 1 inputs for model 'm'. Got input(s) ['B'], "
        "but missing required input(s) ['A']. Please provide all required input(s)."
    )


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (
            [_t("A", "FP64", [1, 1, 3])],
            "inference input 'A' data-type is 'FP64', but model 'm' expects 'FP32'",
        ),
        ([_t("A", "FP32", [5, 1, 3])], "inference request batch-size must be <= 4 for 'm'"),
        (
            [_t("A", "FP32", [1, 1, 4])],
            "unexpected shape for input 'A' for model 'm'. Expected [-1,-1,3], got [1,1,4].",
        ),
        (
            [_t("A", "FP32", [1, 1, 3]), _t("A", "FP32", [1, 1, 3])],
            "input 'A' already exists in request",
        ),
        (
            [_t("A", "FP32", [1, 1, 3]), _t("Z", "FP32", [1])],
            "unexpected inference input 'Z' for model 'm'",
        ),
        (
            [_t("A", "FP32", [1, 1, 3]), _t("R", "INT32", [2, 6])],
            "input 'R' batch size does not match other inputs for 'm'",
        ),
    ],
)
def test_rejections(tensors: list[Tensor], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_inputs(SIG, tensors, None)
    assert info.value.message.startswith("[request id: <id_unknown>] " + message)


def test_reshape_gives_the_runtime_shape() -> None:
    spec = SIG.inputs["R"]
    assert runtime_shape(spec, [3, 6], batched=True) == [3, 2, 3]
    assert runtime_shape(SIG.inputs["A"], [1, 2, 3], batched=True) is None


def test_raw_input_is_deduced_for_single_input_models() -> None:
    config = text_format.Parse(
        'name: "r" max_batch_size: 8 input [{name: "X" data_type: TYPE_FP32 dims: [4]}]',
        mc.ModelConfig(),
    )
    sig = signature_of(config)
    raw = np.frombuffer(np.arange(8, dtype=np.float32).tobytes(), dtype=np.uint8)
    tensor = deduce_raw_input(sig, Tensor("raw_input", "UINT8", [32], raw), None)
    assert (tensor.name, tensor.datatype, tensor.shape) == ("X", "FP32", [2, 4])
    np.testing.assert_array_equal(tensor.data.ravel(), np.arange(8, dtype=np.float32))
    with pytest.raises(InvalidArgument, match="Raw request must only have 1 input"):
        deduce_raw_input(SIG, Tensor("raw_input", "UINT8", [32], raw), None)
