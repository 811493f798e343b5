"""What the metadata questions answer, as plain values; each front end encodes them.

Field order is the order Triton's JSON answers list them in (``orjson`` serialises these
dataclasses field by field, so the HTTP body is the same bytes as before the data plane).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelyard import __version__
from modelyard.scheduling.signature import signature_of

# the protocol extensions the server supports, under Triton's names
EXTENSIONS = [
    "classification",
    "model_repository",
    "model_configuration",
    "binary_tensor_data",
    "parameters",
    "statistics",
]


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str  # wire name: FP32, BYTES, ...
    shape: list[int]  # -1 for a variable dimension (the batch dimension included)


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str  # the config's platform, else its backend (as Triton answers)
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: list[str]


def server_metadata() -> ServerMetadata:
    return ServerMetadata("modelyard", __version__, list(EXTENSIONS))


def model_metadata(config: Any, versions: list[str]) -> ModelMetadata:
    """A model's metadata from its (completed) config: inputs and outputs with the batch
    dimension as -1 when the model batches."""
    sig = signature_of(config)
    batched = sig.batched
    return ModelMetadata(
        name=config.name,
        versions=versions,
        platform=config.platform or config.backend,
        inputs=[
            TensorMetadata(s.name, s.datatype, s.full_shape(batched)) for s in sig.inputs.values()
        ],
        outputs=[
            TensorMetadata(s.name, s.datatype, s.full_shape(batched)) for s in sig.outputs.values()
        ],
    )
