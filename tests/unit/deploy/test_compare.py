"""Comparing outputs: tolerances, shapes, datatypes, exact integers and bytes, readable rows."""

from __future__ import annotations

import numpy as np

from modelyard.deploy.compare import MAX_ROWS, compare


def _bytes(*items: bytes) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = list(items)
    return arr


def test_floats_within_tolerance_pass_and_nan_equals_nan() -> None:
    want = np.array([1.0, np.nan, 100.0])
    got = np.array([1.0000004, np.nan, 100.0009], dtype=np.float32)
    assert compare("Y", want, got, actual_datatype="FP32", atol=1e-6, rtol=1e-5) is None


def test_floats_outside_tolerance_say_where_and_how_much() -> None:
    want = np.zeros((2, 3))
    got = want.astype(np.float32).copy()
    got[1, 2] = 0.5
    got[0, 1] = 0.25
    mismatch = compare("Y", want, got, actual_datatype="FP32", atol=0.1, rtol=0.0)
    assert mismatch is not None
    assert mismatch.summary == "2 of 6 elements differ (atol 0.1, rtol 0); max |diff| 0.5 at [1, 2]"
    assert mismatch.rows == [("[0, 1]", "0", "0.25", "0.25"), ("[1, 2]", "0", "0.5", "0.5")]
    assert "index | expected | actual" in mismatch.text()


def test_shape_and_datatype_checks() -> None:
    want = np.arange(4).reshape(2, 2)
    got = np.arange(4, dtype=np.int64)
    assert compare("Y", want, got, actual_datatype="INT64") is None  # element by element
    mismatch = compare("Y", want, got, actual_datatype="INT64", check_shape=True)
    assert mismatch is not None and mismatch.summary == "shape [4], expected [2, 2]"
    mismatch = compare("Y", want, got, actual_datatype="INT64", expected_datatype="INT32")
    assert mismatch is not None and mismatch.summary == "datatype INT64, expected INT32"
    mismatch = compare("Y", np.arange(3), got, actual_datatype="INT64")
    assert mismatch is not None and "4 elements (shape [4]), expected 3" in mismatch.summary


def test_integers_are_exact_even_beyond_float_precision() -> None:
    big = 2**62
    want = np.array([big + 1], dtype=np.int64)
    got = np.array([big], dtype=np.int64)
    assert compare("Y", want, got, actual_datatype="INT64") is not None
    assert compare("Y", want, got, actual_datatype="INT64", atol=2) is None


def test_bytes_and_many_differences() -> None:
    mismatch = compare("T", _bytes(b"a", b"b"), _bytes(b"a", b"c" * 100), actual_datatype="BYTES")
    assert mismatch is not None and mismatch.summary == "1 of 2 elements differ"
    assert mismatch.rows[0][0] == "[1]" and mismatch.rows[0][2].endswith("...")
    many = compare("Y", np.zeros(50), np.ones(50), actual_datatype="FP64")
    assert many is not None and len(many.rows) == MAX_ROWS and many.summary.startswith("50 of 50")
