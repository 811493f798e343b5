"""The gRPC front end: grpcio's asyncio server in the server's one event loop.

It serves Triton's ``inference.GRPCInferenceService`` (the proto Triton publishes, compiled
inside ``tritonclient[grpc]``) and standard health checking (``grpc.health.v1``), over the
same :class:`~modelyard.dataplane.DataPlane` as HTTP. Its lifecycle is every front end's:
``start`` binds and serves, ``drain(grace)`` (readiness is false by then) holds new calls,
sends GOAWAY and closes the port, then answers every call it received within ``grace``
seconds, ``stop`` closes what is left.

grpcio rather than grpclib: a 100-byte unary echo measured about 2.9k req/s on grpcio's
asyncio server and 1.4k on grpclib on the 2-core development machine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from modelyard.dataplane import DataPlane
from modelyard.errors import PortUnavailable
from modelyard.protocol._access import Token
from modelyard.protocol.grpc._gate import Gate
from modelyard.protocol.grpc._servicer import HealthServicer, InferenceServicer
from modelyard.settings import GrpcSettings

log = logging.getLogger("modelyard.server")

# --grpc-infer-response-compression-level: grpcio chooses the algorithm per call, not the
# level, so every level but none compresses with gzip (which every gRPC client accepts)
COMPRESSION_LEVELS = ("none", "low", "medium", "high")
# a drain holds calls (GrpcFrontEnd.drain) until none has arrived for QUIET_SECS, at most
# HOLD_SECS (a router's health check takes a draining server out within a second: it
# checks every second, and fails at once, in the configuration `fleet router-config`
# writes) or half the grace; answers leave GOAWAY_SECS after the GOAWAY
QUIET_SECS = 0.1
HOLD_SECS = 3.0
GOAWAY_SECS = 0.02


def server_options(settings: GrpcSettings) -> list[tuple[str, Any]]:
    """grpc core's channel arguments for Triton's flags (``grpc_server.cc``'s mapping)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_input_size),
        ("grpc.max_send_message_length", -1),  # answers are as large as the model makes them
        ("grpc.so_reuseport", 0),  # a port in use is an error, as Triton's --reuse-grpc-port
        ("grpc.keepalive_time_ms", settings.keepalive_time),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout),
        ("grpc.keepalive_permit_without_calls", int(settings.keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", settings.http2_max_pings_without_data),
        (
            "grpc.http2.min_recv_ping_interval_without_data_ms",
            settings.http2_min_recv_ping_interval_without_data,
        ),
        ("grpc.http2.max_ping_strikes", settings.http2_max_ping_strikes),
    ]
    if settings.max_connection_age is not None:
        options.append(("grpc.max_connection_age_ms", settings.max_connection_age))
    if settings.max_connection_age_grace is not None:
        options.append(("grpc.max_connection_age_grace_ms", settings.max_connection_age_grace))
    return options


def _target(address: str, port: int) -> str:
    return (
        f"[{address}]:{port}"
        if ":" in address and not address.startswith("[")
        else (f"{address}:{port}")
    )


class GrpcFrontEnd:
    """``inference.GRPCInferenceService`` on ``address:port``."""

    def __init__(
        self,
        plane: DataPlane,
        settings: GrpcSettings,
        address: str,
        tokens: tuple[Token, ...] = (),
    ) -> None:
        self.settings = settings
        self.address = address
        self.port = settings.port
        compression = (
            None if settings.infer_response_compression_level == "none" else grpc.Compression.Gzip
        )
        self.gate = Gate(settings.restricted_protocol, tokens)
        self.servicer = InferenceServicer(plane, self.gate, compression)
        self.health = HealthServicer(plane, self.gate)
        self._server: grpc.aio.Server | None = None
        self.unfinished = False  # requests still running when the drain's grace ran out

    async def start(self) -> None:
        """Bind and serve; PortUnavailable (one line) when the port cannot be bound."""
        server = grpc.aio.server(options=server_options(self.settings))
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        target = _target(self.address, self.port)
        try:
            bound = server.add_insecure_port(target)
        except RuntimeError as exc:  # grpcio: "Failed to bind to address ..."
            raise PortUnavailable(
                self.address, self.port, "--grpc-port", _bind_reason(str(exc))
            ) from None
        if self.port == 0:
            self.port = bound
        await server.start()
        self._server = server
        log.info("Started GRPCInferenceService at %s:%d", self.address, self.port)

    async def drain(self, grace: float) -> None:
        """Readiness is false already (the data plane's drain, first, so that health checks
        fail and routers move away). Then no call is lost, in this order:

        1. calls are held: new ones and those answering wait until no new call has
           arrived for ``QUIET_SECS`` (at most ``HOLD_SECS``, or half the grace). A client
           waiting for an answer sends nothing more, and a router stops sending once its
           health check has taken the server out; no answer leaves before 2;
        2. grpc core's graceful stop: it closes the listener and sends HTTP/2 GOAWAY on
           every connection, so that clients and routers send their next calls over a new
           connection, elsewhere. grpc core cancels (CANCELLED) every call that reaches it
           from then on, and any it had not yet handed to the servicer, before they run:
           hence 1, so that none is on its way;
        3. held calls run and answer (after the GOAWAY, on the same connection), calls in
           flight finish; a stream's new request is refused (UNAVAILABLE), an idle stream
           ends after a moment's quiet. All within ``grace`` seconds; what outlives it is
           cancelled.
        """
        servicer = self.servicer
        servicer.hold()
        start = time.monotonic()
        deadline = start + grace
        stopping = None
        try:
            if self._server is not None:
                hold_until = start + min(HOLD_SECS, grace / 2)
                while True:
                    now = time.monotonic()
                    quiet = now - max(start, servicer.last_call) >= QUIET_SECS
                    if quiet or now >= hold_until:
                        break
                    await asyncio.sleep(0.01)
                stopping = asyncio.ensure_future(
                    self._server.stop(max(0.0, deadline - time.monotonic()))
                )
                # the stop calls grpc core's shutdown at once (its GOAWAY is written before
                # any answer queued after it); a moment more for the frames to leave
                await asyncio.sleep(min(max(0.0, deadline - time.monotonic()), GOAWAY_SECS))
        finally:
            servicer.release()
        self.unfinished = not await servicer.settle(max(0.0, deadline - time.monotonic()))
        if stopping is not None:
            await stopping

    async def stop(self) -> bool:
        """Close at once (calls still running are cancelled); True when none was."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(0)
        return not self.unfinished


def _bind_reason(message: str) -> str:
    # grpcio says only "Failed to bind to address ...; set GRPC_VERBOSITY=debug ..."
    return "address already in use or not available" if "bind" in message.lower() else message
