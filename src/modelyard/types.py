"""The core contract, on one screen.

A request arrives on some protocol, is decoded into an :class:`InferRequest` of numpy
tensors, validated against the model's config, run by a :class:`Runtime` (one loaded model
version), and the outputs go back as an :class:`InferResponse`. Protocols (KServe v2 HTTP,
SageMaker's two faces, gRPC later) only translate to and from these types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy.typing as npt

Array = npt.NDArray[Any]

Parameters = dict[str, Any]


@dataclass(slots=True)
class Tensor:
    """One named tensor. ``data`` is a numpy array; BYTES tensors are object arrays of bytes."""

    name: str
    datatype: str
    shape: list[int]
    data: Array
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    """An output the client named. As in Triton, a named output is JSON unless its own
    ``binary_data`` says otherwise; ``binary_data_output`` covers only unnamed outputs."""

    name: str
    binary_data: bool | None = None
    class_count: int = 0
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str = ""  # "" = the version policy's newest ready version
    id: str | None = None
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[RequestedOutput] | None = None  # None = every output of the model
    parameters: Parameters = field(default_factory=dict)
    binary_data_output: bool = False  # request-level default for outputs (binary extension)


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    # a decoupled model's last response: it carried the final flag (Triton's
    # TRITONSERVER_RESPONSE_COMPLETE_FINAL). False where the flag came alone, after it
    final: bool = False


class Runtime(Protocol):
    """One loaded model version: executes a batch of named numpy inputs.

    ``infer`` may be called from a worker thread; implementations that release the GIL
    (onnxruntime does) let the event loop keep serving HTTP while they compute.
    """

    def infer(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]: ...

    def unload(self) -> None: ...


class ModelResolver(Protocol):
    """How a runtime (ensemble, Python BLS) reaches other models without importing the manager."""

    async def infer(self, request: InferRequest) -> InferResponse: ...

    def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        """A decoupled model's responses, one by one (a plain model's single response)."""
        ...

    def hold(self, names: Iterable[str]) -> AbstractContextManager[None]:
        """Keeps these models loaded (not evicted) while the caller's pipeline runs."""
        ...
