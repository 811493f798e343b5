"""Triton's Python-backend API (``import triton_python_backend_utils as pb_utils``), as
modelyard's worker provides it.

Written from Triton's documentation and behaviour, for models that were written for Triton
and must run unmodified. It runs inside the model's own environment (stdlib + numpy);
everything that needs the server (BLS, logging, custom metrics, response senders) goes
through the worker's connection in :mod:`modelyard_worker`.
"""

from __future__ import annotations

import importlib
import json
import struct
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from modelyard_worker import _state
from modelyard_worker._wire import BF16_DTYPE, NUMPY_OF, datatype_of

TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2
TRITONSERVER_MEMORY_CPU = 0
TRITONSERVER_MEMORY_GPU = 2

# TRITONSERVER_DataType values, as triton_dtype() returns them
_TRITON_DTYPE_CODE = {
    "BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6, "INT16": 7,
    "INT32": 8, "INT64": 9, "FP16": 10, "FP32": 11, "FP64": 12, "BYTES": 13, "BF16": 14,
}  # fmt: skip


# --- byte tensors and type helpers -------------------------------------------------------


def serialize_byte_tensor(input_tensor: np.ndarray) -> np.ndarray | None:
    """Triton's serialised form of a BYTES tensor, as a 1-D uint8... object array.

    Mirrors Triton's helper: returns None for an empty tensor, and a one-element array of
    ``np.object_`` holding the serialised bytes otherwise.
    """
    if input_tensor.size == 0:
        return None
    if input_tensor.dtype.kind not in "OS":
        raise Exception("cannot serialize bytes tensor: invalid datatype")
    from modelyard_worker._wire import serialize_bytes

    return np.asarray([serialize_bytes(input_tensor)], dtype=np.object_)


def deserialize_bytes_tensor(encoded_tensor: Any) -> np.ndarray:
    """Splits Triton's serialised BYTES form into a 1-D object array of bytes."""
    data = bytes(encoded_tensor)
    items: list[bytes] = []
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        pos += 4
        items.append(data[pos : pos + n])
        pos += n
    return np.array(items, dtype=np.object_)


def triton_to_numpy_type(data_type: int) -> Any:
    for name, code in _TRITON_DTYPE_CODE.items():
        if code == data_type and name in NUMPY_OF:
            return bool if name == "BOOL" else NUMPY_OF[name].type
    return None


def numpy_to_triton_type(data_type: Any) -> int | None:
    try:
        name = datatype_of(np.empty(0, dtype=data_type))
    except TypeError:
        return None
    return _TRITON_DTYPE_CODE[name]


def triton_string_to_numpy(triton_type_string: str) -> Any:
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    for spec in model_config.get("input", ()):
        if spec["name"] == name:
            return dict(spec)
    return None


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    for spec in model_config.get("output", ()):
        if spec["name"] == name:
            return dict(spec)
    return None


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    policy = model_config.get("model_transaction_policy") or {}
    return bool(policy.get("decoupled", False))


# --- errors ---------------------------------------------------------------------------


class TritonError(Exception):
    """An error a model returns in a response (or BLS reports); codes as in Triton."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        super().__init__(message)
        self._message = str(message)
        self._code = int(code)

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {self._code})"


class TritonModelException(Exception):
    """Raised by the API itself when it is used in a way that cannot work."""


# --- tensors --------------------------------------------------------------------------


class _Capsule:
    """Lets numpy import a bare DLPack capsule (frameworks hand those out)."""

    def __init__(self, capsule: Any) -> None:
        self._capsule = capsule

    def __dlpack__(self, stream: Any = None, **_: Any) -> Any:
        return self._capsule

    def __dlpack_device__(self) -> Any:
        return (1, 0)  # kDLCPU


class Tensor:
    """A named tensor; the data is a numpy array (CPU only in modelyard).

    BF16 has no numpy dtype. As in Triton, ``to_dlpack``/``from_dlpack`` carry it (torch's
    ``bfloat16``); beyond Triton, where ``ml_dtypes`` is installed in the model's
    environment ``as_numpy`` returns an ``ml_dtypes.bfloat16`` array and ``Tensor(name,
    bfloat16_array)`` makes a BF16 tensor. Without ml_dtypes ``as_numpy`` raises Triton's
    error, and the raw 16-bit patterns stay reachable as ``as_numpy_raw()`` (a uint16 view).
    """

    def __init__(self, name: str, numpy_array: Any, *_: Any, **__: Any) -> None:
        arr = np.asarray(numpy_array)
        if arr.dtype.kind == "U":
            arr = arr.astype(np.object_)
        # refuse dtypes Triton has no type for, now rather than later
        self._datatype = datatype_of(arr)
        self._name = _text(name)
        self._array = arr

    @classmethod
    def _received(cls, name: str, datatype: str, arr: np.ndarray) -> Tensor:
        """A tensor off the wire: its datatype is the wire's (BF16 may be raw uint16)."""
        tensor = cls.__new__(cls)
        tensor._name = name
        tensor._datatype = datatype
        tensor._array = arr
        return tensor

    def _wire(self) -> tuple[str, np.ndarray, str]:
        return self._name, self._array, self._datatype

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        if self._datatype == "BF16" and self._array.dtype != BF16_DTYPE:
            raise TritonModelException(
                "Tensor dtype is BF16 and cannot be converted to NumPy. Use to_dlpack() and "
                "from_dlpack() instead (or install ml_dtypes in the model's environment for "
                "an ml_dtypes.bfloat16 array)."
            )
        return self._array

    def as_numpy_raw(self) -> np.ndarray:
        """modelyard's addition: the data as stored, BF16 as uint16 bit patterns."""
        if self._datatype == "BF16":
            return self._array.view(np.uint16)
        return self._array

    def triton_dtype(self) -> int:
        return _TRITON_DTYPE_CODE[self._datatype]

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self) -> Any:
        if self._datatype == "BYTES":
            raise TritonModelException("DLPack does not have support for string tensors.")
        if self._datatype == "BF16":
            # numpy cannot export bfloat16 over DLPack; torch can (Triton's BF16 users use it)
            torch = _torch("a BF16 tensor's to_dlpack()")
            raw = torch.from_numpy(np.ascontiguousarray(self._array.view(np.int16)))
            return torch.utils.dlpack.to_dlpack(raw.view(torch.bfloat16))
        return self._array.__dlpack__()

    def __dlpack__(self, stream: Any = None, **_: Any) -> Any:
        # newer consumers pass max_version/dl_device/copy: a CPU capsule of version 0 suits all
        return self.to_dlpack()

    def __dlpack_device__(self) -> Any:
        return (1, 0)

    @staticmethod
    def from_dlpack(name: str, dlpack_tensor: Any) -> Tensor:
        if isinstance(dlpack_tensor, Tensor):
            return Tensor._received(_text(name), dlpack_tensor._datatype, dlpack_tensor._array)
        source = dlpack_tensor if hasattr(dlpack_tensor, "__dlpack__") else _Capsule(dlpack_tensor)
        device = source.__dlpack_device__() if hasattr(source, "__dlpack_device__") else (1, 0)
        if int(device[0]) != 1:
            raise TritonModelException(
                "modelyard's Python backend takes CPU tensors only: move the tensor to the "
                "CPU before Tensor.from_dlpack"
            )
        if _is_torch_bf16(dlpack_tensor):
            return _from_torch_bf16(name, dlpack_tensor)
        try:
            return Tensor(name, np.from_dlpack(source))
        except (BufferError, TypeError, RuntimeError, ValueError):
            # numpy refuses bfloat16 DLPack tensors (a bare capsule from torch's to_dlpack):
            # torch can read them, where it is installed; the capsule was not consumed
            if "torch" not in sys.modules:
                raise
            torch = sys.modules["torch"]

            tensor = torch.utils.dlpack.from_dlpack(dlpack_tensor)
            if tensor.dtype != torch.bfloat16:
                raise
            return _from_torch_bf16(name, tensor)

    def __repr__(self) -> str:
        return (
            f"Tensor(name={self._name!r}, shape={list(self._array.shape)}, dtype={self._datatype})"
        )


def _torch(what: str) -> Any:
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        raise TritonModelException(
            f"{what} needs torch in the model's environment (numpy has no bfloat16 DLPack "
            "type); or install ml_dtypes and use as_numpy()"
        ) from None
    return torch


def _is_torch_bf16(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor) and obj.dtype == torch.bfloat16


def _from_torch_bf16(name: str, tensor: Any) -> Tensor:
    torch = sys.modules["torch"]

    bits = tensor.detach().contiguous().view(torch.int16).numpy().view(np.uint16)
    arr = bits.view(BF16_DTYPE) if BF16_DTYPE is not None else bits.copy()
    return Tensor._received(_text(name), "BF16", arr)


def _text(value: Any) -> str:
    """A string argument as Triton's pybind11 layer takes it: str, or bytes as UTF-8 (what
    ``as_numpy()[0]`` of a BYTES tensor gives); anything else as its str()."""
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


# --- responses and requests -----------------------------------------------------------


class InferenceResponse:
    def __init__(
        self,
        output_tensors: Sequence[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: Any = None,
    ) -> None:
        self._tensors = list(output_tensors or [])
        for t in self._tensors:
            if not isinstance(t, Tensor):
                raise TritonModelException(
                    f"InferenceResponse output_tensors must be pb_utils.Tensor, got {type(t).__name__}"
                )
        if error is not None and not isinstance(error, TritonError):
            error = TritonError(str(error))
        self._error = error
        if isinstance(parameters, str):
            parameters = json.loads(parameters) if parameters else {}
        self._parameters: dict[str, Any] = dict(parameters or {})

    def output_tensors(self) -> list[Tensor]:
        return self._tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return json.dumps(self._parameters, separators=(",", ":"))


class ResponseSender:
    """Sends a decoupled model's responses: any number, then the final flag."""

    def __init__(self, exec_id: int, index: int) -> None:
        self._exec_id = exec_id
        self._index = index
        self._closed = False

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        if self._closed:
            raise TritonModelException("Unable to send response. Response sender has been closed.")
        final = bool(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if response is None and not final:
            raise TritonModelException(
                "Inference Response object is needed when the flag is not final."
            )
        if final:
            self._closed = True
        _state.worker().send_stream(self._exec_id, self._index, response, final)

    def is_cancelled(self) -> bool:
        return bool(_state.worker().is_cancelled(self._exec_id, self._index))


class InferenceRequest:
    """A request the model received, or (built by the model) a BLS request to another model."""

    def __init__(
        self,
        model_name: str = "",
        inputs: Sequence[Tensor] | None = None,
        requested_output_names: Sequence[str] | None = None,
        request_id: str = "",
        correlation_id: Any = 0,
        flags: int = 0,
        timeout: int = 0,
        model_version: int = -1,
        preferred_memory: Any = None,
        trace: Any = None,
        parameters: Any = None,
        **_: Any,
    ) -> None:
        self._model_name = _text(model_name)
        self._inputs = list(inputs or [])
        self._requested = [_text(n) for n in requested_output_names or []]
        self._request_id = _text(request_id or "")
        self._correlation_id = correlation_id
        self._flags = int(flags)
        self._timeout = int(timeout)
        self._model_version = int(model_version)
        if isinstance(parameters, str):
            parameters = json.loads(parameters) if parameters else {}
        self._parameters: dict[str, Any] = dict(parameters or {})
        self._sender: ResponseSender | None = None
        self._exec_id = -1
        self._index = -1

    # --- what a received request offers
    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._requested

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> Any:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        return self._timeout

    def model_name(self) -> str:
        return self._model_name

    def model_version(self) -> int:
        return self._model_version

    def parameters(self) -> str:
        return json.dumps(self._parameters, separators=(",", ":"))

    def get_response_sender(self) -> ResponseSender:
        if self._sender is None:
            if self._exec_id < 0:
                raise TritonModelException(
                    "only a request the model received has a response sender"
                )
            if not _state.decoupled():
                raise TritonModelException(
                    "Unable to get response sender: the model is not decoupled "
                    "(set model_transaction_policy { decoupled: true })"
                )
            self._sender = ResponseSender(self._exec_id, self._index)
        return self._sender

    def is_cancelled(self) -> bool:
        if self._exec_id < 0:
            return False
        return bool(_state.worker().is_cancelled(self._exec_id, self._index))

    def set_flags(self, flags: int) -> None:
        self._flags = int(flags)

    def trace(self) -> Any:
        return None  # modelyard does not trace requests

    def set_release_flags(self, flags: int) -> None:
        raise TritonModelException(
            "request rescheduling (set_release_flags) is for sequence batching, which "
            "modelyard does not support"
        )

    # --- BLS
    def exec(self, decoupled: bool = False) -> Any:
        """Runs this request on another model and waits: one response, or an iterator of
        a decoupled model's responses."""
        return _state.worker().bls(self, decoupled)

    def async_exec(self, decoupled: bool = False) -> Any:
        """The awaitable form of :meth:`exec`, for ``async def execute``."""
        return _state.worker().bls_async(self, decoupled)


# --- logging --------------------------------------------------------------------------


class LogLevel:
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


class Logger:
    """Triton's model logger: lines go to the server's log, tagged with the model."""

    LogLevel = LogLevel
    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE

    @staticmethod
    def log(message: str, level: int = LogLevel.INFO) -> None:
        _state.log(int(level), str(message))

    @staticmethod
    def log_info(message: str) -> None:
        _state.log(LogLevel.INFO, str(message))

    @staticmethod
    def log_warn(message: str) -> None:
        _state.log(LogLevel.WARNING, str(message))

    @staticmethod
    def log_error(message: str) -> None:
        _state.log(LogLevel.ERROR, str(message))

    @staticmethod
    def log_verbose(message: str) -> None:
        _state.log(LogLevel.VERBOSE, str(message))


# --- custom metrics -------------------------------------------------------------------


class MetricFamily:
    """A custom metric family, exported on the server's ``/metrics``."""

    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2

    def __init__(self, name: str, description: str, kind: int) -> None:
        if kind not in (self.COUNTER, self.GAUGE, self.HISTOGRAM):
            raise TritonModelException(f"unknown metric kind {kind}")
        self._name = str(name)
        self._kind = int(kind)
        self._id = _state.worker().metric_family(self._name, str(description), self._kind)

    def Metric(
        self, labels: dict[str, str] | None = None, buckets: Sequence[float] | None = None
    ) -> Metric:
        return Metric(self, labels or {}, buckets)


class Metric:
    def __init__(
        self, family: MetricFamily, labels: dict[str, str], buckets: Sequence[float] | None
    ) -> None:
        if family._kind == MetricFamily.HISTOGRAM and not buckets:
            raise TritonModelException("histogram metrics need buckets")
        if family._kind != MetricFamily.HISTOGRAM and buckets:
            raise TritonModelException("only histogram metrics take buckets")
        self._family = family
        self._labels = {str(k): str(v) for k, v in labels.items()}
        self._value = 0.0
        self._sum = 0.0
        self._count = 0
        self._buckets = sorted(float(b) for b in buckets) if buckets else None
        self._id = _state.worker().metric(family._id, self._labels, self._buckets)

    def increment(self, value: float) -> None:
        if self._family._kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("increment is not supported for histogram metrics")
        if self._family._kind == MetricFamily.COUNTER and value < 0:
            raise TritonModelException("a counter cannot be incremented by a negative value")
        self._value += float(value)
        _state.worker().metric_update(self._id, "inc", float(value))

    def set(self, value: float) -> None:
        if self._family._kind != MetricFamily.GAUGE:
            raise TritonModelException("set is only supported for gauge metrics")
        self._value = float(value)
        _state.worker().metric_update(self._id, "set", float(value))

    def observe(self, value: float) -> None:
        if self._family._kind != MetricFamily.HISTOGRAM:
            raise TritonModelException("observe is only supported for histogram metrics")
        self._sum += float(value)
        self._count += 1
        _state.worker().metric_update(self._id, "obs", float(value))

    def value(self) -> float:
        if self._family._kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("value is not supported for histogram metrics")
        return self._value


# --- model control (Triton's "Model Loading API") -------------------------------------


def load_model(
    model_name: str | bytes, config: str | bytes = "", files: dict[str, bytes] | None = None
) -> None:
    """Load (or reload) a model through the server's repository logic, as
    ``POST /v2/repository/models/{name}/load`` would: ``config`` a JSON config override,
    ``files`` ``{"file:1/model.onnx": bytes, ...}`` (requires ``config``, as in Triton)."""
    import base64

    sent = {str(k): base64.b64encode(bytes(v)).decode() for k, v in (files or {}).items()}
    _state.worker().control(
        "load", model=_text(model_name), config=_text(config) if config else "", files=sent
    )


def unload_model(model_name: str | bytes) -> None:
    """Unload a model (and forget files a ``load_model`` sent), as the repository API does."""
    _state.worker().control("unload", model=_text(model_name))


def is_model_ready(model_name: str | bytes, model_version: str | bytes = "") -> bool:
    """Whether the model (the version, when given) is loaded and ready."""
    answer = _state.worker().control(
        "ready", model=_text(model_name), version=_text(model_version) if model_version else ""
    )
    return bool(answer.get("ready"))


# --- auto-complete --------------------------------------------------------------------


class ModelConfig:
    """The config handed to ``auto_complete_config``: only max_batch_size, inputs, outputs,
    dynamic batching and the transaction policy may change, with Triton's checks."""

    def __init__(self, model_config: Any) -> None:
        self._model_config: dict[str, Any] = (
            json.loads(model_config) if isinstance(model_config, (str, bytes)) else model_config
        )
        self._model_config.setdefault("input", [])
        self._model_config.setdefault("output", [])
        self._model_config.setdefault("max_batch_size", 0)

    def as_dict(self) -> dict[str, Any]:
        return self._model_config

    def _name(self) -> str:
        return str(self._model_config.get("name", ""))

    def set_max_batch_size(self, max_batch_size: int) -> None:
        current = int(self._model_config.get("max_batch_size", 0))
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in auto-complete-config "
                f"function for model '{self._name()}' specified max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{other}', but "
                    f"auto-complete-config function for model '{self._name()}' tries to set "
                    "scheduling_choice as 'dynamic_batching'"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def set_model_transaction_policy(self, transaction_policy_dict: dict[str, Any]) -> None:
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError(
                    f"model transaction property in auto-complete-config function for model "
                    f"'{self._name()}' contains property other than 'decoupled'"
                )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        wanted = bool(transaction_policy_dict.get("decoupled", False))
        if "decoupled" in policy and bool(policy["decoupled"]) != wanted:
            raise ValueError(
                f"trying to change decoupled property in auto-complete-config for model "
                f"'{self._name()}', which is already set to {policy['decoupled']}"
            )
        policy["decoupled"] = wanted

    def add_input(self, input: dict[str, Any]) -> None:
        self._add("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output: dict[str, Any]) -> None:
        self._add("output", output, ("name", "data_type", "dims"))

    def _add(self, kind: str, spec: dict[str, Any], valid: Sequence[str]) -> None:
        model = self._name()
        for prop in spec:
            if prop not in valid:
                allowed = (
                    "'name', 'data_type', 'dims' and 'optional'"
                    if kind == "input"
                    else "'name', 'data_type' and 'dims'"
                )
                raise ValueError(
                    f"{kind} '{spec.get('name')}' in auto-complete-config function for model "
                    f"'{model}' contains property other than {allowed}."
                )
        if "name" not in spec:
            raise ValueError(
                f"{kind} in auto-complete-config function for model '{model}' is missing 'name' property."
            )
        for prop in ("data_type", "dims"):
            if prop not in spec:
                raise ValueError(
                    f"{kind} '{spec['name']}' in auto-complete-config function for model "
                    f"'{model}' is missing '{prop}' property."
                )
        for current in self._model_config[kind]:
            if current["name"] != spec["name"]:
                continue
            have = current.get("data_type", "TYPE_INVALID")
            if have != "TYPE_INVALID" and have != spec["data_type"]:
                raise ValueError(
                    f"unable to load model '{model}', configuration expects datatype {have} "
                    f"for {kind} '{spec['name']}', model provides {spec['data_type']}"
                )
            dims = [int(d) for d in current.get("dims", [])]
            if dims and dims != [int(d) for d in spec["dims"]]:
                raise ValueError(
                    f"model '{model}', tensor '{spec['name']}': the model expects dims "
                    f"{list(spec['dims'])} but the model configuration specifies dims {dims}"
                )
            if (
                kind == "input"
                and "optional" in current
                and "optional" in spec
                and current["optional"] != spec["optional"]
            ):
                raise ValueError(
                    f"model '{model}', tensor '{spec['name']}': the model expects optional "
                    f"{spec['optional']} but the model configuration specifies optional {current['optional']}"
                )
            current["data_type"] = spec["data_type"]
            current["dims"] = spec["dims"]
            if "optional" in spec:
                current["optional"] = spec["optional"]
            return
        self._model_config[kind].append(dict(spec))
