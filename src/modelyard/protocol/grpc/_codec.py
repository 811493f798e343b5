"""``inference.ModelInferRequest`` / ``ModelInferResponse`` <-> modelyard's types.

Tensors arrive in ``raw_input_contents`` (what ``tritonclient.grpc`` sends: the bytes of
each input in order, BYTES elements length-prefixed as over HTTP) or in the typed
``contents`` fields; answers always go in ``raw_output_contents``, which is what Triton
sends and ``InferResult.as_numpy`` reads. The byte-level rules (sizes, the length-prefixed
strings) are :mod:`modelyard.wire.v2`'s, so a tensor decodes the same whichever protocol it
came by, with the same messages.

Errors carry Triton 2.51's texts, recorded from its gRPC endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from modelyard.datatypes import WIRE_DATATYPES, numpy_dtype
from modelyard.errors import InvalidArgument
from modelyard.types import InferRequest, InferResponse, RequestedOutput, Tensor
from modelyard.wire.v2 import check_string_count, tensor_bytes, tensor_from_bytes

# the request parameter that asks for an empty response carrying only the final flag
EMPTY_FINAL: Final = "triton_enable_empty_final_response"
FINAL: Final = "triton_final_response"

# typed contents field -> (the type Triton names in its error, the datatypes it may carry)
_CONTENTS: Final[dict[str, tuple[str, frozenset[str]]]] = {
    "bool_contents": ("BOOL", frozenset({"BOOL"})),
    "int_contents": ("INT32", frozenset({"INT8", "INT16", "INT32"})),
    "int64_contents": ("INT64", frozenset({"INT64"})),
    "uint_contents": ("UINT32", frozenset({"UINT8", "UINT16", "UINT32"})),
    "uint64_contents": ("UINT64", frozenset({"UINT64"})),
    "fp32_contents": ("FP32", frozenset({"FP32"})),
    "fp64_contents": ("FP64", frozenset({"FP64"})),
    "bytes_contents": ("BYTES", frozenset({"BYTES"})),
}
_FIELD_OF: Final[dict[str, str]] = {
    datatype: field for field, (_, types) in _CONTENTS.items() for datatype in types
}


def check_version(version: str) -> str:
    """A version string as Triton reads it: empty (the policy's choice) or an integer > 0."""
    if version and not (version.isdigit() and int(version) > 0):
        raise InvalidArgument(
            f"failed to get model version from specified version string '{version}' "
            "(details: stol), version should be an integral value > 0"
        )
    return version


def parameter_value(name: str, param: pb.InferParameter) -> Any:
    """The Python value of one ``InferParameter`` (its ``oneof``)."""
    choice = param.WhichOneof("parameter_choice")
    if choice is None:
        raise InvalidArgument(
            f"invalid value type for '{name}' parameter, expected int64_param, bool_param, "
            "or string_param."
        )
    return getattr(param, choice)


def set_parameter(param: pb.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    elif isinstance(value, bytes):
        param.bytes_param = value
    else:
        param.string_param = str(value)


def _request_parameters(message: pb.ModelInferRequest, request: InferRequest) -> None:
    for key, param in message.parameters.items():
        choice = param.WhichOneof("parameter_choice")
        if key == "priority":
            if choice not in ("int64_param", "uint64_param"):
                raise InvalidArgument(
                    "invalid value type for 'priority' parameter, expected int64_param or "
                    "uint64_param."
                )
        elif key == "timeout":
            if choice != "int64_param":
                raise InvalidArgument(
                    "invalid value type for 'timeout' parameter, expected int64_param."
                )
        elif key == EMPTY_FINAL:
            continue  # the stream's business, not the model's
        elif key.startswith("triton_"):
            raise InvalidArgument(
                "parameter keys starting with 'triton_' are reserved for Triton usage. Only "
                f"the following keys starting with 'triton_' are allowed: {EMPTY_FINAL}"
            )
        request.parameters[key] = parameter_value(key, param)


def _shared_memory(name: str, params: Mapping[str, pb.InferParameter]) -> None:
    """No shared memory is registered here (no region can be): Triton's answers."""
    if "shared_memory_region" not in params:
        return
    if "shared_memory_byte_size" not in params:
        raise InvalidArgument(
            "'shared_memory_byte_size' must be specified along with 'shared_memory_region' "
            f"parameter for tensor '{name}'"
        )
    region = params["shared_memory_region"].string_param
    raise InvalidArgument(f"Unable to find shared memory region: '{region}'")


def _from_contents(tensor: Tensor, contents: pb.InferTensorContents, model: str) -> Any:
    """A tensor sent in the typed fields: each field only for its own datatypes."""
    name, datatype = tensor.name, tensor.datatype
    for field, (kind, types) in _CONTENTS.items():
        if datatype not in types and len(getattr(contents, field)):
            raise InvalidArgument(
                f"unexpected explicit tensor data for input tensor '{name}' for model "
                f"'{model}' of type '{kind}', expected datatype '{datatype}'"
            )
    typed = _FIELD_OF.get(datatype)
    values = list(getattr(contents, typed)) if typed is not None else []
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array
    return np.array(values, dtype=numpy_dtype(datatype))


def decode_request(message: pb.ModelInferRequest) -> InferRequest:
    """A ``ModelInferRequest`` as an :class:`InferRequest`; InvalidArgument, with Triton's
    texts, when it cannot be one. Checks against the model's config come later (the
    scheduler's), as for HTTP."""
    model = message.model_name
    request = InferRequest(
        model_name=model, model_version=message.model_version, id=message.id or None
    )
    if message.parameters:
        _request_parameters(message, request)
    prefix = f"[request id: {message.id or '<id_unknown>'}] "
    raw = message.raw_input_contents
    next_raw = 0
    for item in message.inputs:
        name, datatype = item.name, item.datatype
        shape = list(item.shape)
        params = item.parameters
        tensor = Tensor(name, datatype, shape, _EMPTY)
        if params:
            _shared_memory(name, params)
            tensor.parameters = {k: parameter_value(k, v) for k, v in params.items()}
        if item.HasField("contents"):
            if len(raw):
                raise InvalidArgument(
                    "contents field must not be specified when using raw_input_contents for "
                    f"'{name}' for model '{model}'"
                )
            data = _from_contents(tensor, item.contents, model)
            if datatype == "BYTES":
                tensor.data = data
                check_string_count(tensor, prefix, model)
            else:
                count, size = math.prod(shape), numpy_dtype(datatype).itemsize
                if len(data) != count:
                    raise InvalidArgument(
                        f"{prefix}input byte size mismatch for input '{name}' for model "
                        f"'{model}'. Expected {count * size}, got {len(data) * size}"
                    )
                tensor.data = data.reshape(shape)
        elif next_raw < len(raw):
            if datatype not in WIRE_DATATYPES:
                raise InvalidArgument(f"invalid datatype for input {name}")
            tensor.data = tensor_from_bytes(tensor, memoryview(raw[next_raw]), prefix, model)
            next_raw += 1
        else:
            raise InvalidArgument(
                f"unable to find data for input tensor '{name}' for model '{model}' in request."
            )
        request.inputs.append(tensor)
    if message.outputs:
        request.outputs = [_requested(item) for item in message.outputs]
    return request


def _requested(item: pb.ModelInferRequest.InferRequestedOutputTensor) -> RequestedOutput:
    params = item.parameters
    if not params:
        return RequestedOutput(item.name)
    _shared_memory(item.name, params)
    class_count = 0
    extra: dict[str, Any] = {}
    for key, param in params.items():
        if key == "classification":
            choice = param.WhichOneof("parameter_choice")
            if choice not in ("int64_param", "uint64_param") or getattr(param, choice) < 0:
                raise InvalidArgument(
                    "invalid value type for 'classification' parameter, expected int64_param."
                )
            class_count = int(getattr(param, choice))
        elif key != "binary_data":  # every output is binary on gRPC
            extra[key] = parameter_value(key, param)
    return RequestedOutput(item.name, None, class_count, extra)


def encode_response(response: InferResponse) -> pb.ModelInferResponse:
    """An :class:`InferResponse` as Triton's gRPC answer: every output's bytes in
    ``raw_output_contents``, in output order."""
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    for key, value in response.parameters.items():
        set_parameter(message.parameters[key], value)
    outputs = message.outputs
    raw = message.raw_output_contents
    for tensor in response.outputs:
        outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        data = tensor_bytes(tensor)
        raw.append(data if type(data) is bytes else bytes(data))
    return message


def encode_stream_response(response: InferResponse, final: bool) -> pb.ModelStreamInferResponse:
    """One response on a stream. Every one carries Triton's ``triton_final_response``
    parameter, whether or not the client asked for empty final responses: true on the
    response that carried the final flag (a plain model's only one), false on the others."""
    message = encode_response(response)
    message.parameters[FINAL].bool_param = final
    return pb.ModelStreamInferResponse(infer_response=message)


def stream_error(
    message: str, request_id: str, model: str | None = None
) -> pb.ModelStreamInferResponse:
    """An error inside a stream, as Triton sends it: the stream goes on.

    An error the model itself sent (or a failure while it ran) names the model and is the
    request's final response; one found before the model ran (unknown model, bad input)
    carries only the request's id.
    """
    answer = pb.ModelInferResponse(id=request_id)
    if model is not None:
        answer.model_name = model
        answer.parameters[FINAL].bool_param = True
    return pb.ModelStreamInferResponse(error_message=message, infer_response=answer)


def empty_final(model: str, version: str, request_id: str) -> pb.ModelStreamInferResponse:
    """The response ``triton_enable_empty_final_response`` asks for when a decoupled model
    sends its final flag alone (``send(flags=FINAL)``, no response with it): no outputs,
    ``triton_final_response: true``, the request's model name, version (as the request
    gave it) and id. A model that sends the flag with its last response gets none."""
    answer = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    answer.parameters[FINAL].bool_param = True
    return pb.ModelStreamInferResponse(infer_response=answer)


_EMPTY: Final = np.empty(0, dtype=np.uint8)
