"""Triton's generate extension (``/generate``, ``/generate_stream``): plain JSON in and out.

The request is one JSON object whose keys name the model's inputs (``parameters`` aside):
a scalar is a one-element tensor, a list a tensor of its nested shape, typed by the model's
config. Keys that name no input are ignored, as Triton ignores them. Each response is one
JSON object: every output by name (a scalar when it holds one element, else a flat list),
plus ``model_name`` and ``model_version``, keys sorted as Triton writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from modelyard.datatypes import numpy_dtype
from modelyard.errors import InvalidArgument
from modelyard.types import InferRequest, InferResponse, Tensor

SSE_CONTENT_TYPE = b"text/event-stream; charset=utf-8"
ONE_RESPONSE_ONLY = (
    "generate expects model to produce exactly 1 response, use generate stream for model "
    "that generates various number of responses"
)


def decode_generate_request(
    body: bytes,
    model_name: str,
    model_version: str,
    input_types: Mapping[str, str],
    batched: bool,
) -> InferRequest:
    """``input_types``: the model's inputs (name -> wire datatype) in config order."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("the generate request must be a JSON object")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidArgument("'parameters' must be a JSON object")
    inputs: list[Tensor] = []
    for name, datatype in input_types.items():
        if name not in doc:
            continue
        inputs.append(_tensor(name, datatype, doc[name], batched))
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        id=str(doc["id"]) if isinstance(doc.get("id"), str) else None,
        inputs=inputs,
        parameters=dict(parameters),
    )


def _tensor(name: str, datatype: str, value: Any, batched: bool) -> Tensor:
    if datatype == "BYTES":
        arr = np.array(value, dtype=object)
        flat = arr.reshape(-1)
        for i, item in enumerate(flat):
            if isinstance(item, str):
                flat[i] = item.encode()
            elif not isinstance(item, bytes):
                raise InvalidArgument(
                    f"unable to parse '{name}': expected a string for a BYTES input, "
                    f"got {type(item).__name__}"
                )
    else:
        try:
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf":
                raise TypeError(arr.dtype)
            target = numpy_dtype(datatype)
            if arr.dtype.kind == "f" and target.kind in "iu" and not np.all(arr == np.round(arr)):
                raise TypeError(arr.dtype)
            arr = arr.astype(target)
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgument(
                f"unable to parse '{name}': {value!r} is not valid {datatype} data"
            ) from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if batched:
        arr = arr.reshape(1, *arr.shape)
    return Tensor(name, datatype, list(arr.shape), arr)


def encode_generate_response(response: InferResponse) -> bytes:
    doc: dict[str, Any] = {}
    for tensor in response.outputs:
        flat = tensor.data.reshape(-1)
        if tensor.datatype == "BYTES":
            values: list[Any] = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat
            ]
        else:
            values = flat.tolist()
        doc[tensor.name] = values[0] if len(values) == 1 else values
    doc["model_name"] = response.model_name
    doc["model_version"] = response.model_version
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def sse_error(message: str) -> bytes:
    return sse_event(orjson.dumps({"error": message}))
