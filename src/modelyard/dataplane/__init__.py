"""The transport-neutral data plane: every rule of the KServe v2 / Triton API that is not
about bytes on a wire, once, for every front end (HTTP v2, SageMaker, gRPC).

A front end decodes its transport's request, calls one :class:`DataPlane` method and
encodes what comes back (or the error raised, from the one tree in ``modelyard.errors``).
Nothing here imports a web framework, HTTP or gRPC.
"""

from modelyard.dataplane.metadata import (
    EXTENSIONS,
    ModelMetadata,
    ServerMetadata,
    TensorMetadata,
)
from modelyard.dataplane.plane import DataPlane, DataPlaneOptions, Decode

__all__ = [
    "EXTENSIONS",
    "DataPlane",
    "DataPlaneOptions",
    "Decode",
    "ModelMetadata",
    "ServerMetadata",
    "TensorMetadata",
]
