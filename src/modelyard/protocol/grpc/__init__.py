"""KServe v2 over gRPC, as Triton serves it: ``inference.GRPCInferenceService`` and
standard health checking, over the same data plane as HTTP.

``_codec.py`` translates Triton's messages to and from modelyard's types, ``_servicer.py``
answers each RPC with one data-plane call, ``_gate.py`` applies the access policy, and
``server.py`` runs grpcio's asyncio server with Triton's options.
"""

from modelyard.protocol.grpc.server import COMPRESSION_LEVELS, GrpcFrontEnd, server_options

__all__ = ["COMPRESSION_LEVELS", "GrpcFrontEnd", "server_options"]
