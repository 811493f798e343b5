"""Triton datatypes: the wire names, the ``config.pbtxt`` enum names and numpy dtypes.

One table so that the config parser, the wire codec and the runtimes agree. numpy has no
bfloat16, so BF16 is ``ml_dtypes.bfloat16``: two bytes per element on the wire, exactly the
form ``tritonclient`` sends and expects. BYTES tensors are numpy ``object`` arrays of ``bytes``.

This is the source of truth. The Python backend's worker restates it
(``runtimes/python/worker_lib/modelyard_worker/_wire.py``: it runs in models' own
environments, where modelyard cannot be imported); a unit test pins the copy to this table.
"""

from __future__ import annotations

from typing import Final

import ml_dtypes
import numpy as np

from modelyard.errors import InvalidArgument

# wire name -> numpy dtype (BYTES maps to object)
_WIRE_TO_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
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
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(np.object_),
}

WIRE_DATATYPES: Final[frozenset[str]] = frozenset(_WIRE_TO_NUMPY)

# element size in bytes of fixed-size types (BYTES has none)
ELEMENT_SIZE: Final[dict[str, int]] = {
    k: v.itemsize for k, v in _WIRE_TO_NUMPY.items() if k != "BYTES"
}

_NUMPY_TO_WIRE: Final[dict[np.dtype[np.generic], str]] = {v: k for k, v in _WIRE_TO_NUMPY.items()}


def numpy_dtype(wire: str) -> np.dtype[np.generic]:
    """numpy dtype for a wire datatype name; raises InvalidArgument for unknown names."""
    try:
        return _WIRE_TO_NUMPY[wire]
    except KeyError:
        raise InvalidArgument(f"invalid datatype '{wire}'") from None


def wire_datatype(dtype: np.dtype[np.generic]) -> str:
    """Wire datatype name for a numpy dtype (str/bytes/object arrays are BYTES)."""
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _NUMPY_TO_WIRE[dtype]
    except KeyError:
        raise InvalidArgument(f"unsupported numpy dtype '{dtype}'") from None


def config_to_wire(config_type_name: str) -> str:
    """``TYPE_FP32`` -> ``FP32``; ``TYPE_STRING`` -> ``BYTES`` (Triton's own mapping)."""
    name = config_type_name.removeprefix("TYPE_")
    if name == "STRING":
        return "BYTES"
    if name not in _WIRE_TO_NUMPY:
        raise InvalidArgument(f"unsupported config datatype '{config_type_name}'")
    return name


def wire_to_config(wire: str) -> str:
    """``FP32`` -> ``TYPE_FP32``; ``BYTES`` -> ``TYPE_STRING``."""
    if wire == "BYTES":
        return "TYPE_STRING"
    if wire not in _WIRE_TO_NUMPY:
        raise InvalidArgument(f"invalid datatype '{wire}'")
    return f"TYPE_{wire}"
