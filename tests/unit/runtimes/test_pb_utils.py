"""The worker's ``triton_python_backend_utils``, imported as a model imports it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from modelyard.runtimes.python._process import WORKER_LIB


@pytest.fixture(scope="module")
def pb_utils() -> Iterator[Any]:
    sys.path.insert(0, str(WORKER_LIB))
    try:
        import triton_python_backend_utils

        yield triton_python_backend_utils
    finally:
        sys.path.remove(str(WORKER_LIB))


def test_string_arguments_take_bytes(pb_utils: Any) -> None:
    name = np.array([b"add_sub"], dtype=object)[0]
    request = pb_utils.InferenceRequest(
        model_name=name, requested_output_names=[b"OUTPUT0", "OUTPUT1"], request_id=b"r1"
    )
    assert request.model_name() == "add_sub"
    assert request.requested_output_names() == ["OUTPUT0", "OUTPUT1"]
    assert request.request_id() == "r1"
    assert pb_utils.Tensor(b"X", np.zeros(2)).name() == "X"


def test_bf16_without_ml_dtypes_is_refused_by_as_numpy_as_in_triton(
    pb_utils: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model environment without ml_dtypes holds BF16 as raw uint16 patterns: as_numpy
    raises Triton's error, the raw view and a DLPack pass-through keep the type."""
    monkeypatch.setattr(pb_utils, "BF16_DTYPE", None)
    bits = np.array([0x3FC0, 0xC000], dtype=np.uint16)  # 1.5, -2.0
    tensor = pb_utils.Tensor._received("X", "BF16", bits)
    with pytest.raises(pb_utils.TritonModelException, match="BF16 and cannot be converted"):
        tensor.as_numpy()
    np.testing.assert_array_equal(tensor.as_numpy_raw(), bits)
    assert tensor.triton_dtype() == 14
    same = pb_utils.Tensor.from_dlpack("Y", tensor)
    assert same._wire()[0] == "Y" and same._wire()[2] == "BF16"
