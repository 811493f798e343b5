"""The frame format between the server and a model's worker process.

Kept to the standard library and numpy because it runs inside the model's own environment
(any CPython >= 3.8 with numpy), next to code modelyard does not control.

A frame is ``<u32 json length><u32 payload length><json><payload>``. The JSON names the
operation and describes the tensors (``"t": [[name, datatype, shape, nbytes, where], ...]``);
their bytes follow in order in the payload, or, for large ones (``where`` = arena offset),
in the sender's shared-memory arena. BYTES tensors travel in Triton's serialised form (a
4-byte little-endian length before each element), so neither side pickles anything: a
worker cannot make the server run code by sending it data.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

try:  # the server always has orjson; a model's environment may not
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

    loads = orjson.loads
except ImportError:  # pragma: no cover - exercised by environments without orjson

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), default=_json_default).encode()

    def loads(data: Any) -> Any:
        return json.loads(bytes(data))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


HEAD = struct.Struct("<II")
INLINE = -1  # "where" of a tensor carried in the frame's payload

# The same table as modelyard.datatypes (the source of truth), restated: this module runs in
# models' own environments, where modelyard is not importable. A unit test pins the two
# together (tests/unit/runtimes/test_python_wire.py). numpy has no bfloat16: BF16 is
# ml_dtypes.bfloat16 where ml_dtypes is installed (the server always has it), and otherwise
# travels as its raw 16-bit patterns in a uint16 array (STORAGE_OF) that keeps its BF16 tag.
NUMPY_OF = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
try:  # optional in a model's environment
    import ml_dtypes

    BF16_DTYPE: Any = np.dtype(ml_dtypes.bfloat16)
    NUMPY_OF["BF16"] = BF16_DTYPE
except ImportError:  # pragma: no cover - exercised by environments without ml_dtypes
    BF16_DTYPE = None

# every datatype the wire carries -> the dtype its elements are stored as on this side
STORAGE_OF = dict(NUMPY_OF)
STORAGE_OF.setdefault("BF16", np.dtype(np.uint16))
_DATATYPE_OF = {v: k for k, v in NUMPY_OF.items()}


def datatype_of(arr: np.ndarray) -> str:
    """Triton's datatype name for an array (strings of any numpy kind are BYTES)."""
    kind = arr.dtype.kind
    if kind in "OSU":
        return "BYTES"
    try:
        return _DATATYPE_OF[arr.dtype.newbyteorder("=")]
    except KeyError:
        raise TypeError(f"unsupported numpy dtype {arr.dtype} for a Triton tensor") from None


def serialize_bytes(arr: np.ndarray) -> bytes:
    """Triton's BYTES wire form: each element's length (u32 LE) then its bytes, C order."""
    parts: list[bytes] = []
    pack = struct.Struct("<I").pack
    for item in arr.reshape(-1) if arr.size else ():
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, (bytes, bytearray)):
            item = str(item).encode("utf-8")
        parts.append(pack(len(item)))
        parts.append(bytes(item))
    return b"".join(parts)


def deserialize_bytes(buf: Any, shape: Sequence[int]) -> np.ndarray:
    """The inverse of :func:`serialize_bytes`: an object array of ``bytes``."""
    view = memoryview(buf)
    count = int(np.prod(shape)) if len(shape) else 1
    out = np.empty(count, dtype=object)
    pos = 0
    unpack = struct.Struct("<I").unpack_from
    for i in range(count):
        (n,) = unpack(view, pos)
        pos += 4
        out[i] = bytes(view[pos : pos + n])
        pos += n
    return out.reshape(shape)


class Outgoing:
    """One frame being assembled: JSON header plus the buffers that follow it."""

    __slots__ = ("buffers", "msg", "size", "specs")

    def __init__(self, msg: dict[str, Any]) -> None:
        self.msg = msg
        self.specs: list[list[Any]] = []
        self.buffers: list[Any] = []
        self.size = 0

    def add(
        self, name: str, arr: np.ndarray, arena: Arena | None = None, datatype: str | None = None
    ) -> None:
        """Appends a tensor; ``datatype`` names its Triton type where the dtype alone does
        not (BF16 held as raw uint16 patterns)."""
        if datatype is None:
            datatype = datatype_of(arr)
        if datatype == "BYTES":
            data: Any = serialize_bytes(arr)
        else:
            if not arr.flags.c_contiguous:
                arr = np.ascontiguousarray(arr)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("="))
            data = arr.reshape(-1).view(np.uint8) if arr.size else b""
        nbytes = len(data)
        where = INLINE
        if arena is not None and nbytes >= arena.threshold:
            where = arena.put(data)
        self.specs.append([name, datatype, list(arr.shape), nbytes, where])
        if where == INLINE:
            self.buffers.append(data)
            self.size += nbytes

    def frame(self) -> list[Any]:
        if self.specs:
            self.msg["t"] = self.specs
        head = dumps(self.msg)
        return [HEAD.pack(len(head), self.size), head, *self.buffers]


def tensors_of(
    msg: dict[str, Any], payload: Any, arena: Arena | None = None, copy: bool = False
) -> list[tuple[str, str, np.ndarray]]:
    """The tensors a frame carries, as numpy arrays.

    Inline tensors are views of ``payload`` (the caller owns it); arena tensors are copied
    out when ``copy`` (the receiver then frees them at once) or left as views.
    """
    out: list[tuple[str, str, np.ndarray]] = []
    pos = 0
    for name, datatype, shape, nbytes, where in msg.get("t", ()):
        if where == INLINE:
            raw = payload[pos : pos + nbytes]
            pos += nbytes
        else:
            if arena is None:
                raise ValueError("frame names a shared-memory tensor but no arena is attached")
            raw = arena.view(where, nbytes)
            if copy:
                raw = bytearray(raw)
        if datatype == "BYTES":
            arr = deserialize_bytes(raw, shape)
        else:
            arr = np.frombuffer(raw, dtype=STORAGE_OF[datatype]).reshape(shape)
        out.append((name, datatype, arr))
    return out


class FrameReader:
    """Cuts a byte stream into (message, payload) frames; the payloads are fresh bytearrays
    (writable, so a model may modify its input arrays in place, as it can in Triton)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: Any) -> list[tuple[dict[str, Any], bytearray]]:
        buf = self._buf
        buf += data
        frames: list[tuple[dict[str, Any], bytearray]] = []
        pos = 0
        size = len(buf)
        while size - pos >= 8:
            jlen, plen = HEAD.unpack_from(buf, pos)
            end = pos + 8 + jlen + plen
            if end > size:
                break
            msg = loads(buf[pos + 8 : pos + 8 + jlen])
            frames.append((msg, buf[pos + 8 + jlen : end]))
            pos = end
        if pos:
            del buf[:pos]
        return frames


class Arena:
    """A shared-memory region written by one side and read by the other.

    The writer allocates (first fit over a free list kept sorted by offset, 64-byte aligned)
    and frees when the reader reports a region consumed; a tensor that does not fit goes
    inline instead, so a full arena slows transfers down but never fails them.
    """

    ALIGN = 64

    def __init__(self, mm: Any, threshold: int = 64 * 1024) -> None:
        self._mm = mm
        self._view = memoryview(mm)
        self.size = len(mm)
        self.threshold = threshold
        self._free: list[list[int]] = [[0, self.size]]
        self._used: dict[int, int] = {}

    def put(self, data: Any) -> int:
        n = len(data)
        need = (n + self.ALIGN - 1) // self.ALIGN * self.ALIGN or self.ALIGN
        for i, (start, length) in enumerate(self._free):
            if length >= need:
                if length == need:
                    del self._free[i]
                else:
                    self._free[i] = [start + need, length - need]
                self._used[start] = need
                self._view[start : start + n] = memoryview(data).cast("B")
                return start
        return INLINE

    def view(self, offset: int, nbytes: int) -> memoryview:
        return self._view[offset : offset + nbytes]

    def free(self, offset: int) -> None:
        need = self._used.pop(offset, 0)
        if not need:
            return
        free = self._free
        lo, hi = 0, len(free)
        while lo < hi:
            mid = (lo + hi) // 2
            if free[mid][0] < offset:
                lo = mid + 1
            else:
                hi = mid
        free.insert(lo, [offset, need])
        # merge with the next, then the previous block
        if lo + 1 < len(free) and offset + need == free[lo + 1][0]:
            free[lo][1] += free[lo + 1][1]
            del free[lo + 1]
        if lo > 0 and free[lo - 1][0] + free[lo - 1][1] == offset:
            free[lo - 1][1] += free[lo][1]
            del free[lo]

    @property
    def in_use(self) -> int:
        return sum(self._used.values())

    def close(self) -> None:
        self._view.release()
        self._mm.close()


def arena_offsets(msg: dict[str, Any]) -> list[int]:
    """The arena regions a received frame occupies (to report back once consumed)."""
    return [spec[4] for spec in msg.get("t", ()) if spec[4] != INLINE]
