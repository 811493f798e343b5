"""Triton's classification extension as a pure function.

A client asks for it with ``outputs[i].parameters.classification = k``; instead of the raw
tensor the response carries a BYTES tensor of the top ``k`` entries, each
``"<value>:<index>"`` or ``"<value>:<index>:<label>"`` (Triton's ``classification.cc``):

* the value is C++ ``std::to_string``: ``%f`` (six decimals) for floats, plain for integers;
* entries are sorted by value, highest first; ties keep index order (what ``std::sort`` does
  on the small arrays it sorts by insertion);
* the label comes from the output's ``label_filename``; an index past the end of the labels,
  or whose label line is empty, gets no label;
* a model with a batch dimension (``max_batch_size > 0``) is classified row by row, and the
  result has shape ``[batch, k']``, otherwise ``[k']``, where ``k' = min(k, row size)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelyard.datatypes import wire_datatype
from modelyard.errors import InvalidArgument

_SUPPORTED = frozenset(
    ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64"]
)


def classify(
    values: npt.NDArray[Any],
    class_count: int,
    labels: Sequence[str] | None = None,
    batched: bool = False,
) -> npt.NDArray[np.object_]:
    """Top ``class_count`` entries of ``values`` as Triton renders them (object array of bytes).

    Raises InvalidArgument, with Triton's text, for datatypes Triton cannot classify
    (BOOL, FP16, BF16 and BYTES; Triton 2.51 crashes on BYTES, we answer like the others).
    """
    datatype = wire_datatype(values.dtype)
    if datatype not in _SUPPORTED:
        raise InvalidArgument(
            f"class result not available for output due to unsupported type '{datatype}'"
        )
    has_batch = batched and values.ndim > 0
    rows = values.reshape(values.shape[0] if has_batch else 1, -1)
    per_row = rows.shape[1]
    k = min(class_count, per_row)
    is_float = values.dtype.kind == "f"
    out = np.empty((rows.shape[0], k), dtype=object)
    for r, row in enumerate(rows):
        # stable descending sort: ties stay in ascending index order
        order = (per_row - 1 - np.argsort(row[::-1], kind="stable")[::-1])[:k]
        for j, (index, value) in enumerate(zip(order.tolist(), row[order].tolist(), strict=True)):
            text = f"{value:f}:{index}" if is_float else f"{value}:{index}"
            if labels is not None and index < len(labels) and labels[index]:
                text = f"{text}:{labels[index]}"
            out[r, j] = text.encode()
    return out if has_batch else out.reshape(k)
