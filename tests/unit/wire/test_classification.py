"""Triton's classification extension (more cases in test_v2_triton_recording.py)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from modelyard.errors import InvalidArgument
from modelyard.wire.classification import classify


def test_top_k_with_labels_and_six_decimals() -> None:
    values = np.array([0.1, 0.5, 0.25, 0.7], dtype=np.float32)
    got = classify(values, 2, ["a", "b", "c", "d"])
    assert got.tolist() == [b"0.700000:3:d", b"0.500000:1:b"]
    assert got.dtype == object and got.shape == (2,)


def test_missing_or_empty_labels_are_left_out() -> None:
    got = classify(np.array([3, 2, 1], dtype=np.int64), 3, ["x", ""])
    assert got.tolist() == [b"3:0:x", b"2:1", b"1:2"]


def test_k_is_capped_at_the_row_size() -> None:
    assert classify(np.array([1.0, 2.0]), 5).shape == (2,)


def test_batched_rows_are_classified_separately() -> None:
    values = np.array([[1, 9, 5], [7, 0, 8]], dtype=np.uint8)
    got = classify(values, 2, None, batched=True)
    assert got.shape == (2, 2)
    assert got.tolist() == [[b"9:1", b"5:2"], [b"8:2", b"7:0"]]


def test_without_batch_dim_the_whole_tensor_is_one_row() -> None:
    values = np.array([[1, 9], [5, 7]], dtype=np.int32)
    assert classify(values, 2).tolist() == [b"9:1", b"7:3"]


def test_ties_keep_index_order() -> None:
    values = np.array([1, 2, 2, 1, 2] * 10, dtype=np.float64)
    got = classify(values, 4)
    assert got.tolist() == [b"2.000000:1", b"2.000000:2", b"2.000000:4", b"2.000000:6"]


@pytest.mark.parametrize(
    ("values", "name"),
    [
        (np.array([True]), "BOOL"),
        (np.array([1.0], dtype=np.float16), "FP16"),
        (np.array([1.0], dtype=ml_dtypes.bfloat16), "BF16"),
        (np.array([b"a"], dtype=object), "BYTES"),
    ],
)
def test_unsupported_types(values: np.ndarray, name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        classify(values, 1)
    assert info.value.message == (
        f"class result not available for output due to unsupported type '{name}'"
    )
