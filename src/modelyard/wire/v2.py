"""KServe v2 infer requests and responses, byte-compatible with Triton's HTTP endpoint.

A request body is a JSON header optionally followed by binary tensors (Triton's binary
tensor extension): ``Inference-Header-Content-Length`` says where the JSON ends, and every
input with ``parameters.binary_data_size`` takes that many bytes, in input order, from what
follows. Responses mirror it: outputs asked for as binary are appended after the JSON
header, and the server sends the header's length in the same HTTP header.

Errors carry Triton 2.51's exact texts, recorded from a real server in
``tests/unit/wire/fixtures/triton_infer_errors.json``. Triton answers the errors its JSON
accessors raise ("Unable to parse 'inputs': ...") with HTTP 500; modelyard keeps the texts
but answers 400 (see :func:`_json_error`: the request is at fault). Checks that Triton's core makes (rather
than its HTTP front end) are prefixed with ``[request id: <id>] `` like Triton's.

Checks against the model's config (datatype, shape, batch size, input and output names)
are the server's job; this module only knows the request.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from modelyard.datatypes import ELEMENT_SIZE, WIRE_DATATYPES, numpy_dtype
from modelyard.errors import InvalidArgument
from modelyard.types import InferRequest, InferResponse, RequestedOutput, Tensor

__all__ = [
    "RAW_INPUT_NAME",
    "check_string_count",
    "decode_infer_request",
    "decode_infer_response",
    "encode_infer_request",
    "encode_infer_response",
    "tensor_bytes",
    "tensor_from_bytes",
]

RAW_INPUT_NAME: Final = "raw_input"
"""Name of the one input of a raw binary request (``Inference-Header-Content-Length: 0``).

Triton treats such a body as the raw bytes of the model's single input; the tensor we
return is ``UINT8 [nbytes]`` named ``raw_input``, with ``parameters={"raw_input": True}``.
The server's validator gives it the config input's name, datatype and shape.
"""

_NUMPY_OPTS: Final = orjson.OPT_SERIALIZE_NUMPY

# Triton's JSON accessor errors (common/triton_json.h), after "Unable to parse '<field>': "
_MISSING: Final = "attempt to access non-existing object member '{}'"
_NON_ARRAY: Final = "attempt to access JSON non-array as array"
_NON_STRING: Final = "attempt to access JSON non-string as string"
_NON_UINT: Final = "attempt to access JSON non-unsigned-integer as unsigned-integer"
_NON_INT: Final = "attempt to access JSON non-signed-integer as signed-integer"
_NON_BOOL: Final = "attempt to access JSON non-boolean as boolean"
_NON_NUMBER: Final = "attempt to access JSON non-number as double"
_SHAPE_MISMATCH: Final = "Unable to parse 'data': Shape does not match true shape of 'data' field"

# Python's json messages -> rapidjson's (what Triton prints)
_RAPIDJSON: Final = {
    "Expecting value": "Invalid value.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Expecting ',' delimiter": "Missing a comma or ']' after an array element.",
}

_INT_KINDS: Final = frozenset(
    ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
)

Array = npt.NDArray[Any]


def _json_error(message: str) -> InvalidArgument:
    """A request whose JSON does not parse or has the wrong shape: Triton's text, status 400.

    Triton answers these with 500 (its JSON accessors fail with an internal error code).
    modelyard deliberately answers 400: the request is at fault, and a 5xx makes clients
    and load balancers retry a request that can never succeed (docs/api.md).
    """
    return InvalidArgument(message)


# ------------------------------------------------------------------------------------------
# requests
# ------------------------------------------------------------------------------------------


def decode_infer_request(
    body: bytes | bytearray | memoryview,
    header_length: int | None,
    model_name: str,
    model_version: str,
) -> InferRequest:
    """Parse a v2 infer request body into numpy tensors.

    ``header_length`` is the ``Inference-Header-Content-Length`` HTTP header as an int
    (None when absent: the whole body is JSON). Fixed-size binary inputs are zero-copy,
    read-only views of ``body``. Raises InvalidArgument with Triton's wording.
    """
    view = memoryview(body)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    size = len(view)
    if header_length is None:
        header_length = size
    elif header_length < 0 or header_length > size:
        raise InvalidArgument(
            f"inference header size should be in range (0, {size}), got: {header_length}"
        )
    if header_length == 0:
        return _raw_request(view, model_name, model_version)

    doc = _parse_json(view[:header_length] if header_length < size else view)
    if type(doc) is not dict:
        raise _json_error("Unable to parse 'inputs': " + _MISSING.format("inputs"))

    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise _json_error("Unable to parse 'id': " + _NON_STRING)
    request = InferRequest(model_name=model_name, model_version=model_version, id=request_id)
    if "parameters" in doc:
        _parse_parameters(doc["parameters"], request)

    inputs = doc.get("inputs")
    if type(inputs) is not list:
        detail = _MISSING.format("inputs") if inputs is None else _NON_ARRAY
        raise _json_error("Unable to parse 'inputs': " + detail)
    prefix = f"[request id: {request_id or '<id_unknown>'}] "
    pending: list[tuple[Tensor, memoryview | None]] = []
    offset = header_length
    for item in inputs:
        tensor, nbytes = _parse_input(item)
        if nbytes is None:
            pending.append((tensor, None))
            continue
        end = offset + nbytes
        if end > size:
            raise InvalidArgument(
                f"unexpected size for input '{tensor.name}', expecting {end - size} "
                f"additional bytes for model '{model_name}'"
            )
        pending.append((tensor, view[offset:end]))
        offset = end
    if offset != size:
        raise InvalidArgument(f"unexpected additional input data for model '{model_name}'")

    if "outputs" in doc:
        request.outputs = _parse_outputs(doc["outputs"])

    # what Triton's core checks once the HTTP front end has handed the tensors over
    for tensor, raw in pending:
        if raw is not None:
            tensor.data = _from_binary(tensor, raw, prefix, model_name)
        elif tensor.datatype == "BYTES":
            _check_string_count(tensor, prefix, model_name)
        request.inputs.append(tensor)
    return request


def _raw_request(view: memoryview, model_name: str, model_version: str) -> InferRequest:
    data = np.frombuffer(view, dtype=np.uint8)
    tensor = Tensor(RAW_INPUT_NAME, "UINT8", [len(data)], data, {"raw_input": True})
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=[tensor],
        binary_data_output=True,
    )


def _parse_json(header: memoryview) -> Any:
    try:
        return orjson.loads(header)
    except orjson.JSONDecodeError:
        pass
    # Triton's rapidjson accepts NaN, Infinity and -Infinity and stops at the end of the
    # root value, ignoring whatever follows it; Python's json can do both.
    text = bytes(header).decode("utf-8", "surrogateescape")
    try:
        doc, _ = json.JSONDecoder().raw_decode(text)
        return doc
    except json.JSONDecodeError as exc:
        if not text.strip():
            reason = "The document is empty."
        else:
            reason = _RAPIDJSON.get(exc.msg, exc.msg + ".")
        raise _json_error(
            f"failed to parse the request JSON buffer: {reason} at {exc.pos}"
        ) from None
    except RecursionError:
        # nested deeper than orjson's limit (1024) is deeper than Python's recursive
        # decoder can go too: malformed for our purposes, like any other bad JSON
        raise _json_error(
            "failed to parse the request JSON buffer: The document is nested too deeply."
        ) from None


def _parse_parameters(params: Any, request: InferRequest) -> None:
    if type(params) is not dict:
        raise _json_error("failed to get request params.: attempt to get members for non-object")
    for key, value in params.items():
        if key == "binary_data_output":
            if type(value) is not bool:
                raise _json_error("Unable to parse 'binary_data_output': " + _NON_BOOL)
            request.binary_data_output = value
            continue
        if key == "sequence_id":
            if type(value) is not str and not (type(value) is int and value >= 0):
                raise _json_error("Unable to parse 'sequence_id': " + _NON_STRING)
        elif key in ("sequence_start", "sequence_end"):
            if type(value) is not bool:
                raise _json_error(f"Unable to parse '{key}': " + _NON_BOOL)
        elif key in ("priority", "timeout"):
            if type(value) is not int or value < 0:
                raise _json_error(f"Unable to parse '{key}': " + _NON_UINT)
        elif key.startswith("triton_"):
            raise InvalidArgument(
                "parameter keys starting with 'triton_' are reserved for Triton usage "
                "and should not be specified."
            )
        elif type(value) not in (str, int, bool, float):
            raise InvalidArgument(
                f"parameter '{key}' has invalid type. It should be either 'int', 'bool', "
                "or 'string'."
            )
        request.parameters[key] = value


def _member_str(obj: Any, key: str) -> str:
    value = obj.get(key) if type(obj) is dict else None
    if type(value) is str:
        return value
    detail = _MISSING.format(key) if value is None else _NON_STRING
    raise _json_error(f"Unable to parse '{key}': {detail}")


def _parse_input(item: Any) -> tuple[Tensor, int | None]:
    """(tensor, binary byte size or None); JSON data is converted here, binary data later."""
    params = item.get("parameters") if type(item) is dict else None
    params = params if type(params) is dict else {}
    has_data = type(item) is dict and "data" in item
    has_binary = "binary_data_size" in params
    has_shm = "shared_memory_region" in params
    if has_data + has_binary + has_shm != 1:
        message = (
            "Input must set only one of the following fields: 'data', 'binary_data_size' in "
            "'parameters', 'shared_memory_region' in 'parameters'. But"
        )
        if not (has_data or has_binary or has_shm):
            message += " no field is set"
        else:
            message += " set" + "".join(
                f" '{field}'"
                for field, is_set in (
                    ("data", has_data),
                    ("binary_data_size", has_binary),
                    ("shared_memory_region", has_shm),
                )
                if is_set
            )
        raise InvalidArgument(message)

    name = _member_str(item, "name")
    datatype = _member_str(item, "datatype")
    shape = item.get("shape")
    if type(shape) is not list:
        raise _json_error(
            "Unable to parse 'shape': "
            + (_MISSING.format("shape") if shape is None else _NON_ARRAY)
        )
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise _json_error("Unable to parse 'shape': " + _NON_UINT)
    extra = {k: v for k, v in params.items() if k != "binary_data_size"} if params else {}
    tensor = Tensor(name, datatype, shape, _EMPTY, extra)

    if has_shm:
        raise InvalidArgument(
            f"Unable to find shared memory region: '{params['shared_memory_region']}'"
        )
    if has_binary:
        nbytes = params["binary_data_size"]
        if type(nbytes) is not int or nbytes < 0:
            raise _json_error("Unable to parse 'binary_data_size': " + _NON_UINT)
        if datatype not in WIRE_DATATYPES:
            raise InvalidArgument(f"invalid datatype for input {name}")
        return tensor, nbytes

    count = math.prod(shape)
    if count == 0:  # Triton ignores 'data' entirely for zero-element tensors
        tensor.data = np.empty(shape, dtype=numpy_dtype(datatype))
        return tensor, None
    data = item["data"]
    if type(data) is not list:
        raise _json_error("Unable to parse 'data': " + _NON_ARRAY)
    tensor.data = _from_json(name, datatype, shape, count, data)
    return tensor, None


_EMPTY: Final[Array] = np.empty(0, dtype=np.uint8)


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for element in stack[-1]:
            if type(element) is list:
                stack.append(iter(element))
                break
            out.append(element)
        else:
            stack.pop()
    return out


def _from_json(name: str, datatype: str, shape: list[int], count: int, data: list[Any]) -> Array:
    if datatype in ("FP16", "BF16"):
        raise InvalidArgument(
            f"receiving {datatype} data via JSON is not supported. Please use the binary "
            f"data format for input {name}"
        )
    if datatype not in WIRE_DATATYPES:
        raise InvalidArgument(f"invalid datatype for input {name}")
    types = set(map(type, data))
    if list in types:
        data = _flatten(data)
        types = set(map(type, data))

    if datatype == "BYTES":
        if not types <= {str}:
            raise _json_error("Unable to parse JSON bytes array: " + _NON_STRING)
        # the element count is checked later, as Triton's core does, with its wording
        array = np.empty(len(data), dtype=object)
        array[:] = [s.encode() for s in data]
        return array

    if datatype == "BOOL":
        ok, detail = types <= {bool}, _NON_BOOL
    elif datatype in _INT_KINDS:
        ok, detail = types <= {int}, (_NON_UINT if datatype[0] == "U" else _NON_INT)
    else:
        ok, detail = types <= {int, float}, _NON_NUMBER
    if not ok:
        raise _json_error("Unable to parse 'data': " + detail)
    if len(data) != count:
        raise _json_error(_SHAPE_MISMATCH)
    dtype = numpy_dtype(datatype)
    if datatype in _INT_KINDS:
        # Triton reads every integer as 64 bits and truncates it to the element type
        wide = np.uint64 if datatype[0] == "U" else np.int64
        try:
            array = np.array(data, dtype=wide)
        except OverflowError:
            raise _json_error("Unable to parse 'data': " + detail) from None
        if array.dtype != dtype:
            array = array.astype(dtype)
    else:
        array = np.array(data, dtype=dtype)
    return array.reshape(shape)


def _from_binary(tensor: Tensor, raw: memoryview, prefix: str, model_name: str) -> Array:
    name, datatype, shape = tensor.name, tensor.datatype, tensor.shape
    count = math.prod(shape)
    if datatype == "BYTES":
        return _split_bytes(raw, name, shape, count, prefix, model_name)
    expected = count * ELEMENT_SIZE[datatype]
    if len(raw) != expected:
        raise InvalidArgument(
            f"{prefix}input byte size mismatch for input '{name}' for model '{model_name}'. "
            f"Expected {expected}, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=numpy_dtype(datatype)).reshape(shape)


def _split_bytes(
    raw: memoryview, name: str, shape: list[int], count: int, prefix: str, model_name: str
) -> Array:
    """4-byte little-endian length + bytes, per element (NUL bytes allowed)."""
    elements: list[bytes] = []
    offset, end = 0, len(raw)
    from_bytes = int.from_bytes
    while offset < end:
        if end - offset < 4:
            raise InvalidArgument(
                f"{prefix}incomplete string length indicator for inference input '{name}' "
                f"for model '{model_name}', expecting 4 bytes but only {end - offset} bytes "
                "available. Please make sure the string length indicator is in one buffer."
            )
        if len(elements) >= count:
            raise InvalidArgument(
                f"{prefix}unexpected number of string elements {len(elements) + 1} for "
                f"inference input '{name}' for model '{model_name}', expecting {count}"
            )
        length = from_bytes(raw[offset : offset + 4], "little")
        offset += 4
        if length > end - offset:
            raise InvalidArgument(
                f"incomplete string data for inference input '{name}', expecting string of "
                f"length {length} but only {end - offset} bytes available"
            )
        elements.append(raw[offset : offset + length].tobytes())
        offset += length
    if len(elements) != count:
        raise InvalidArgument(
            f"{prefix}expected {count} string elements for inference input '{name}' for "
            f"model '{model_name}', got {len(elements)}"
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array.reshape(shape)


def _check_string_count(tensor: Tensor, prefix: str, model_name: str) -> None:
    count, got = math.prod(tensor.shape), len(tensor.data)
    if got < count:
        raise InvalidArgument(
            f"{prefix}expected {count} string elements for inference input '{tensor.name}' "
            f"for model '{model_name}', got {got}"
        )
    if got > count:
        raise InvalidArgument(
            f"{prefix}unexpected number of string elements {count + 1} for inference input "
            f"'{tensor.name}' for model '{model_name}', expecting {count}"
        )
    if tensor.data.shape != tuple(tensor.shape):
        tensor.data = tensor.data.reshape(tensor.shape)


def _parse_outputs(outputs: Any) -> list[RequestedOutput]:
    if type(outputs) is not list:
        raise _json_error("Unable to parse 'outputs': " + _NON_ARRAY)
    requested = []
    for item in outputs:
        params = item.get("parameters") if type(item) is dict else None
        params = params if type(params) is dict else {}
        if "shared_memory_region" in params:
            if "classification" in params:
                raise InvalidArgument(
                    "Output can't set both 'shared_memory_region' and 'classification'"
                )
            if params.get("binary_data") is True:
                raise InvalidArgument(
                    "Output can't set both 'shared_memory_region' and 'binary_data'"
                )
        name = _member_str(item, "name")
        class_count = params.get("classification", 0)
        if type(class_count) is not int or class_count < 0:
            raise _json_error("Unable to set 'classification': " + _NON_UINT)
        if "shared_memory_region" in params:
            raise InvalidArgument(
                f"Unable to find shared memory region: '{params['shared_memory_region']}'"
            )
        binary = params.get("binary_data")
        if binary is not None and type(binary) is not bool:
            raise _json_error("Unable to parse 'binary_data': " + _NON_BOOL)
        extra = {k: v for k, v in params.items() if k not in ("binary_data", "classification")}
        requested.append(RequestedOutput(name, binary, class_count, extra))
    return requested


# ------------------------------------------------------------------------------------------
# responses
# ------------------------------------------------------------------------------------------


def encode_infer_response(
    response: InferResponse,
    requested: list[RequestedOutput] | None,
    binary_default: bool,
) -> tuple[bytes, int | None]:
    """Serialise a response as Triton does: ``(body, json_header_length)``.

    ``json_header_length`` is None when no binary bytes follow the JSON (Triton then sends
    plain ``application/json``); otherwise it is the ``Inference-Header-Content-Length``.

    An output named in ``requested`` is binary only if it says ``binary_data: true``;
    ``binary_default`` (the request's ``binary_data_output``) applies to outputs the request
    did not name, which is Triton's rule. Outputs keep the order of ``response.outputs``.
    Classification is not applied here: the server replaces such outputs with
    :func:`modelyard.wire.classification.classify` first.
    """
    wanted: dict[str, RequestedOutput] = {r.name: r for r in requested} if requested else {}
    doc: dict[str, Any] = {}
    if response.id:
        doc["id"] = response.id
    doc["model_name"] = response.model_name
    doc["model_version"] = response.model_version
    if response.parameters:
        doc["parameters"] = response.parameters
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for tensor in response.outputs:
        spec = wanted.get(tensor.name)
        binary = binary_default if spec is None else bool(spec.binary_data)
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary:
            raw = _to_binary(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            if len(raw):
                chunks.append(raw)
        else:
            entry["data"] = _to_json(tensor)
        outputs.append(entry)
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=_NUMPY_OPTS)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _to_binary(tensor: Tensor) -> bytes | memoryview:
    data = tensor.data
    if tensor.datatype == "BYTES":
        parts: list[bytes] = []
        for element in data.ravel().tolist():
            b = element if type(element) is bytes else _as_bytes(element)
            parts.append(len(b).to_bytes(4, "little"))
            parts.append(b)
        return b"".join(parts)
    if not data.flags.c_contiguous:
        data = np.ascontiguousarray(data)
    # a uint8 view: the buffer protocol knows no bfloat16, and this costs no copy
    return data.reshape(-1).view(np.uint8).data


def _as_bytes(element: Any) -> bytes:
    if isinstance(element, str):
        return element.encode()
    if isinstance(element, bytes | bytearray | memoryview):
        return bytes(element)
    return str(element).encode()


def _to_json(tensor: Tensor) -> Any:
    datatype, data = tensor.datatype, tensor.data
    if datatype in ("FP16", "BF16"):
        raise InvalidArgument(
            f"sending {datatype} data via JSON is not supported. Please use the binary data "
            "format for output"
        )
    if datatype == "BYTES":
        return _bytes_to_json(data.ravel().tolist())
    flat = data.ravel()
    if datatype in ("FP32", "FP64"):
        if datatype == "FP32":
            # Triton writes each float as the double it widens to: 0.1f -> 0.10000000149011612
            flat = flat.astype(np.float64)
            # any NaN or infinity makes the sum non-finite, and widened float32 values cannot
            # overflow a double's sum: half the cost of isfinite().all() on a small tensor
            finite = math.isfinite(_add(flat))
        else:
            finite = bool(np.isfinite(flat).all())
        if not finite:
            # orjson writes NaN as null; Triton's rapidjson writes NaN / Infinity / -Infinity
            return [v if math.isfinite(v) else _non_finite(v) for v in flat.tolist()]
    elif not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat)
    return flat


_add = np.add.reduce


def _non_finite(value: float) -> orjson.Fragment:
    if value != value:
        return orjson.Fragment(b"NaN")
    return orjson.Fragment(b"Infinity" if value > 0 else b"-Infinity")


def _bytes_to_json(elements: list[Any]) -> list[Any]:
    try:
        return [e.decode() if type(e) is bytes else _as_bytes(e).decode() for e in elements]
    except UnicodeDecodeError:
        pass
    # Triton copies the bytes into its JSON unchanged, invalid UTF-8 included
    out: list[Any] = []
    for e in elements:
        raw = e if type(e) is bytes else _as_bytes(e)
        try:
            out.append(raw.decode())
        except UnicodeDecodeError:
            text = json.dumps(raw.decode("utf-8", "surrogateescape"), ensure_ascii=False)
            out.append(orjson.Fragment(text.encode("utf-8", "surrogateescape")))
    return out


# ------------------------------------------------------------------------------------------
# the client's half (``modelyard test``): requests out, responses in, same codec
# ------------------------------------------------------------------------------------------


def encode_infer_request(
    inputs: list[Tensor], outputs: list[str], parameters: dict[str, Any] | None = None
) -> tuple[bytes, int]:
    """A request with every input binary and every output asked for as binary, as
    tritonclient sends them, so every datatype round-trips exactly (BYTES that are not
    UTF-8, NaN, BF16): ``(body, json_header_length)``."""
    header: dict[str, Any] = {"inputs": []}
    chunks: list[bytes | memoryview] = []
    for tensor in inputs:
        raw = _to_binary(tensor)
        header["inputs"].append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    if outputs:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    else:
        header["parameters"] = {"binary_data_output": True}
    if parameters:
        header.setdefault("parameters", {}).update(parameters)
    head = orjson.dumps(header)
    return b"".join([head, *chunks]), len(head)


def decode_infer_response(body: bytes, header_length: int | None) -> list[Tensor]:
    """The outputs of a server's answer (binary or JSON), decoded with the server's rules."""
    length = len(body) if header_length is None else header_length
    view = memoryview(body)
    doc = _parse_json(view[:length])
    offset = length
    tensors: list[Tensor] = []
    for item in doc.get("outputs", []):
        name, datatype = str(item["name"]), str(item["datatype"])
        shape = [int(d) for d in item.get("shape", [])]
        tensor = Tensor(name, datatype, shape, np.empty(0))
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = view[offset : offset + int(size)]
            offset += int(size)
            tensor.data = _from_binary(tensor, raw, "", str(doc.get("model_name", "")))
        elif datatype == "BYTES":
            data = _flatten(item.get("data", []))
            array = np.empty(len(data), dtype=object)
            # a server copies non-UTF-8 bytes into its JSON as they are: take them back
            array[:] = [s.encode("utf-8", "surrogateescape") for s in data]
            tensor.data = array.reshape(shape)
        else:
            data = item.get("data", [])
            tensor.data = _from_json(name, datatype, shape, math.prod(shape), data)
        tensors.append(tensor)
    return tensors


# ------------------------------------------------------------------------------------------
# one tensor's bytes, for the other protocols that carry them (gRPC's raw contents)
# ------------------------------------------------------------------------------------------


def tensor_from_bytes(tensor: Tensor, raw: memoryview, prefix: str, model_name: str) -> Array:
    """The array ``raw`` holds for ``tensor``'s datatype and shape (BYTES: length-prefixed
    elements), with the size checks and texts of the binary extension; ``prefix`` is the
    ``[request id: ...] `` Triton puts before its core's messages."""
    return _from_binary(tensor, raw, prefix, model_name)


def tensor_bytes(tensor: Tensor) -> bytes | memoryview:
    """A tensor's bytes as the binary extension sends them (BYTES length-prefixed)."""
    return _to_binary(tensor)


def check_string_count(tensor: Tensor, prefix: str, model_name: str) -> None:
    """A BYTES tensor given element by element holds exactly as many as its shape says."""
    _check_string_count(tensor, prefix, model_name)
