"""The worker frame format and the shared-memory arena allocator."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from modelyard.runtimes.python.worker_lib.modelyard_worker._wire import (
    INLINE,
    Arena,
    FrameReader,
    Outgoing,
    arena_offsets,
    datatype_of,
    deserialize_bytes,
    serialize_bytes,
    tensors_of,
)


def _arena(size: int = 1 << 20, threshold: int = 1024) -> Arena:
    return Arena(mmap.mmap(-1, size), threshold)


def test_every_datatype_round_trips_inline() -> None:
    arrays = {
        "b": np.array([True, False]),
        "u8": np.arange(5, dtype=np.uint8),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        "f16": np.ones(3, dtype=np.float16),
        "f64": np.linspace(0, 1, 4),
        "s": np.array([b"a", "\u00e9t\u00e9", b""], dtype=object),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "strided": np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2],
    }
    out = Outgoing({"op": "x"})
    for name, arr in arrays.items():
        out.add(name, arr)
    frames = FrameReader().feed(b"".join(bytes(p) for p in out.frame()))
    assert len(frames) == 1
    msg, payload = frames[0]
    got = {name: arr for name, _, arr in tensors_of(msg, payload)}
    for name, arr in arrays.items():
        if name == "s":
            assert got[name].tolist() == [b"a", "\u00e9t\u00e9".encode(), b""]
        else:
            np.testing.assert_array_equal(got[name], arr)
            assert got[name].dtype == arr.dtype


def test_frames_split_anywhere_are_reassembled() -> None:
    data = b""
    for i in range(5):
        out = Outgoing({"op": "x", "i": i})
        out.add("t", np.full(100, i, dtype=np.int32))
        data += b"".join(bytes(p) for p in out.frame())
    reader = FrameReader()
    seen = []
    for start in range(0, len(data), 7):  # 7-byte chunks cut headers and payloads
        seen += reader.feed(data[start : start + 7])
    assert [m["i"] for m, _ in seen] == [0, 1, 2, 3, 4]
    assert tensors_of(*seen[3])[0][2].tolist() == [3] * 100


def test_large_tensors_go_through_the_arena_and_come_back_identical() -> None:
    arena = _arena(threshold=1024)
    big = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    out = Outgoing({"op": "x"})
    out.add("big", big, arena)
    out.add("small", np.ones(3, dtype=np.float32), arena)
    msg, payload = FrameReader().feed(b"".join(bytes(p) for p in out.frame()))[0]
    assert [spec[4] != INLINE for spec in msg["t"]] == [True, False]
    assert len(payload) == 12  # only the small one travelled in the frame
    got = tensors_of(msg, payload, arena, copy=True)
    np.testing.assert_array_equal(got[0][2], big)
    for offset in arena_offsets(msg):
        arena.free(offset)
    assert arena.in_use == 0


def test_arena_reuses_freed_space_and_coalesces() -> None:
    arena = _arena(size=64 * 1024, threshold=1)
    chunk = b"x" * 16_000
    offsets = [arena.put(chunk) for _ in range(4)]
    assert INLINE not in offsets
    assert arena.put(chunk) == INLINE  # full: the caller sends it inline instead
    for off in (offsets[1], offsets[0], offsets[2]):
        arena.free(off)
    # three neighbours merged: room for one 48 KB block again
    assert arena.put(b"y" * 47_000) != INLINE
    arena.free(offsets[3])
    arena.free(12345)  # unknown offsets are ignored


def test_bytes_serialisation_matches_tritons_form() -> None:
    arr = np.array([[b"ab", b""], [b"xyz", b"\x00"]], dtype=object)
    raw = serialize_bytes(arr)
    assert raw[:6] == b"\x02\x00\x00\x00ab"
    back = deserialize_bytes(raw, [2, 2])
    assert back.tolist() == arr.tolist()


def test_unsupported_dtypes_are_refused() -> None:
    with pytest.raises(TypeError):
        datatype_of(np.zeros(2, dtype=np.complex64))
    assert datatype_of(np.array(["a"])) == "BYTES"


def test_worker_datatype_table_is_pinned_to_modelyard_datatypes() -> None:
    """The worker restates modelyard.datatypes (it cannot import modelyard): every wire
    datatype, its numpy dtype and its element size must agree, BF16 included."""
    from modelyard.datatypes import ELEMENT_SIZE, WIRE_DATATYPES, numpy_dtype
    from modelyard.runtimes.python.worker_lib.modelyard_worker import _wire

    assert set(_wire.NUMPY_OF) == set(WIRE_DATATYPES)  # the server side has ml_dtypes
    assert set(_wire.STORAGE_OF) == set(WIRE_DATATYPES)
    for wire in WIRE_DATATYPES:
        assert _wire.NUMPY_OF[wire] == numpy_dtype(wire), wire
        if wire != "BYTES":
            assert _wire.STORAGE_OF[wire].itemsize == ELEMENT_SIZE[wire], wire
        assert datatype_of(np.empty(0, dtype=numpy_dtype(wire))) == wire


def test_pb_utils_type_codes_cover_every_wire_datatype() -> None:
    import sys

    from modelyard.datatypes import WIRE_DATATYPES
    from modelyard.runtimes.python._process import WORKER_LIB

    sys.path.insert(0, str(WORKER_LIB))
    try:
        import triton_python_backend_utils as pb_utils
    finally:
        sys.path.remove(str(WORKER_LIB))
    assert set(pb_utils._TRITON_DTYPE_CODE) == set(WIRE_DATATYPES)
    # Triton's own config-type table has no TYPE_BF16 (numpy has no such type): the rest agree
    for key, value in pb_utils.TRITON_STRING_TO_NUMPY.items():
        wire = "BYTES" if key == "TYPE_STRING" else key.removeprefix("TYPE_")
        assert wire in WIRE_DATATYPES
        if wire not in ("BOOL", "BYTES"):
            assert np.dtype(value) == _numpy(wire), key


def _numpy(wire: str) -> np.dtype:  # type: ignore[type-arg]
    from modelyard.datatypes import numpy_dtype

    return numpy_dtype(wire)


def test_bf16_crosses_the_wire_as_two_bytes_per_element() -> None:
    import ml_dtypes

    arr = np.array([[1.5, -2.0, 3.25]], dtype=ml_dtypes.bfloat16)
    out = Outgoing({"op": "x"})
    out.add("h", arr)
    # and raw 16-bit patterns tagged BF16 (a worker without ml_dtypes sends those)
    out.add("raw", arr.view(np.uint16), datatype="BF16")
    parts = out.frame()
    frames = FrameReader().feed(b"".join(bytes(p) for p in parts))
    msg, payload = frames[0]
    assert [spec[1] for spec in msg["t"]] == ["BF16", "BF16"]
    assert [spec[3] for spec in msg["t"]] == [6, 6]
    (_, dt1, back), (_, dt2, raw) = tensors_of(msg, payload)
    assert dt1 == dt2 == "BF16"
    assert back.dtype == arr.dtype and raw.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_array_equal(raw, arr)
