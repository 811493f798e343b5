"""Who may call which RPC: the HTTP front end's policy (``protocol/_access.py``), on gRPC.

Triton's ``--grpc-restricted-protocol <groups>:<key>=<value>`` is the HTTP option's
counterpart: an RPC of a restricted group needs the metadata entry
``triton-grpc-protocol-<key>: <value>``, or Triton answers UNAVAILABLE "This protocol is
restricted, expecting header 'triton-grpc-protocol-<key>'" (its code and text, recorded
from Triton 2.51). Bearer tokens (``--auth-token-file``) travel in the ``authorization``
metadata entry, as ``tritonclient.grpc`` sends ``headers={"authorization": "Bearer ..."}``;
they give UNAUTHENTICATED and PERMISSION_DENIED, as HTTP's 401 and 403.

The groups are Triton's: its gRPC server files each RPC under one (:data:`RPC_GROUPS`).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

import grpc

from modelyard.protocol._access import AccessPolicy, Group, RestrictionSetting, Token
from modelyard.protocol.errors import grpc_error

# Triton prefixes every restricted-protocol key with this (its grpc_server.cc)
HEADER_PREFIX = "triton-grpc-protocol-"

RPC_GROUPS: dict[str, Group] = {
    "ServerLive": Group.HEALTH,
    "ServerReady": Group.HEALTH,
    "ModelReady": Group.HEALTH,
    "Check": Group.HEALTH,  # grpc.health.v1.Health
    "ServerMetadata": Group.METADATA,
    "ModelMetadata": Group.METADATA,
    "ModelInfer": Group.INFERENCE,
    "ModelStreamInfer": Group.INFERENCE,
    "ModelConfig": Group.MODEL_CONFIG,
    "ModelStatistics": Group.STATISTICS,
    "RepositoryIndex": Group.MODEL_REPOSITORY,
    "RepositoryModelLoad": Group.MODEL_REPOSITORY,
    "RepositoryModelUnload": Group.MODEL_REPOSITORY,
    "SystemSharedMemoryStatus": Group.SHARED_MEMORY,
    "SystemSharedMemoryRegister": Group.SHARED_MEMORY,
    "SystemSharedMemoryUnregister": Group.SHARED_MEMORY,
    "CudaSharedMemoryStatus": Group.SHARED_MEMORY,
    "CudaSharedMemoryRegister": Group.SHARED_MEMORY,
    "CudaSharedMemoryUnregister": Group.SHARED_MEMORY,
    "TraceSetting": Group.TRACE,
    "LogSettings": Group.LOGGING,
}
# the server's own probes, open without a token (as /v2/health/live and /ready are)
PROBES = frozenset({"ServerLive", "ServerReady", "Check"})


class Refused(Exception):
    """An RPC the gate turns away: the status and text to answer it with."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Gate:
    """The access check every RPC makes first; ``enabled`` is False when nothing is set."""

    def __init__(self, restrictions: Sequence[RestrictionSetting], tokens: Sequence[Token]) -> None:
        self.tokens = AccessPolicy((), tokens) if tokens else None
        self.restrictions: dict[Group, tuple[str, bytes]] = {
            Group(group): (HEADER_PREFIX + key.lower(), value.encode())
            for group, key, value in restrictions
        }
        self.enabled = bool(self.tokens or self.restrictions)

    def check(self, rpc: str, metadata: Any) -> None:
        """Raise :class:`Refused`, or return. Tokens first (who is asking), then the
        group's restriction, as over HTTP."""
        group = RPC_GROUPS[rpc]
        headers: dict[bytes, bytes] = {}
        for key, value in metadata or ():
            headers[key.encode("latin-1")] = (
                value if isinstance(value, bytes) else value.encode("latin-1", "replace")
            )
        if self.tokens is not None:
            try:
                self.tokens.check(group, headers, probe=rpc in PROBES)
            except Exception as exc:
                raise Refused(*grpc_error(exc)) from None
        restriction = self.restrictions.get(group)
        if restriction is not None:
            key, expected = restriction
            actual = headers.get(key.encode("latin-1"))
            if actual is None or not hmac.compare_digest(actual, expected):
                raise Refused(
                    grpc.StatusCode.UNAVAILABLE,
                    f"This protocol is restricted, expecting header '{key}'",
                )
