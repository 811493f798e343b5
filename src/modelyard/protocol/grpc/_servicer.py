"""``inference.GRPCInferenceService`` over the data plane, as Triton serves it.

Each RPC is one :class:`~modelyard.dataplane.DataPlane` call between the codec and the
error mapping (``protocol/errors.py``'s :func:`grpc_error`): the rules (readiness, control
mode, statistics texts, what may be loaded, the request path's order) are the data
plane's, so HTTP and gRPC answer alike and count in the same statistics.

What modelyard does not serve answers as Triton's gRPC endpoint does without it: no shared
memory region is ever registered (the status RPCs list none; registering is
UNIMPLEMENTED), and the trace and log settings RPCs are UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from modelyard.dataplane import DataPlane
from modelyard.errors import (
    DecoupledModel,
    InvalidArgument,
    ModelyardError,
    NotFound,
    Unavailable,
    Unsupported,
)
from modelyard.protocol._server import DRAIN_QUIET_SECS
from modelyard.protocol.errors import grpc_error
from modelyard.protocol.grpc._codec import (
    EMPTY_FINAL,
    check_version,
    decode_request,
    empty_final,
    encode_response,
    encode_stream_response,
    stream_error,
)
from modelyard.protocol.grpc._gate import Gate, Refused
from modelyard.scheduling.runner import DECOUPLED_REFUSED
from modelyard.scheduling.stats import Duration, ModelStats

# Triton's text when ModelInfer reaches a decoupled model (HTTP's names its own end point)
GRPC_DECOUPLED_REFUSED = "ModelInfer RPC doesn't support models with decoupled transaction policy"
DRAINING = "the server is shutting down: it takes no new requests"

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Request = TypeVar("Request")
Response = TypeVar("Response")
Unary = Callable[[Any, Request, Context], Awaitable[Response]]


def rpc(method: Unary[Request, Response]) -> Unary[Request, Response]:
    """The gate (access control), then the method; its errors become the gRPC status.
    While a drain holds calls (until its GOAWAY has gone out), the call waits before it
    runs and before it answers."""
    name = method.__name__

    @functools.wraps(method)
    async def answer(self: InferenceServicer, request: Request, context: Context) -> Response:
        if self.held is not None:
            self.last_call = time.monotonic()
            await self.held.wait()
        try:
            if self.gate.enabled:
                self.gate.check(name, context.invocation_metadata())
            result = await method(self, request, context)
        except Refused as refused:
            code, details = refused.code, refused.details
        except ModelyardError as exc:
            code, details = grpc_error(exc, getattr(request, "model_name", None))
        except Exception as exc:  # a bug: INTERNAL, logged with its traceback
            code, details = grpc_error(exc, getattr(request, "model_name", None))
        else:
            if self.held is not None:
                await self.held.wait()
            return result
        if self.held is not None:
            await self.held.wait()
        await context.abort(code, details)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    return answer


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Every RPC of Triton's service; ``compression`` applies to inference answers
    (``--grpc-infer-response-compression-level``)."""

    def __init__(
        self, plane: DataPlane, gate: Gate, compression: grpc.Compression | None = None
    ) -> None:
        self.plane = plane
        self.gate = gate
        self.compression = compression
        self.draining = False  # set by the front end's drain: requests on streams are refused
        self.held: asyncio.Event | None = None  # a drain's, until its GOAWAY has gone out
        self.last_call = 0.0  # when the last unary call arrived while held
        self.inflight = 0  # inference requests being answered (unary, or on a stream)
        self._streams: set[_OpenStream] = set()  # ModelStreamInfer calls open

    def _begin(self, refuse: bool = False) -> None:
        if refuse and self.draining:
            raise Unavailable(DRAINING)
        self.inflight += 1

    def _end(self) -> None:
        self.inflight -= 1

    def hold(self) -> None:
        """A drain begins: unary calls, new ones and those answering, wait (``release``);
        a new request on an open stream is refused (UNAVAILABLE, a message on it)."""
        self.draining = True
        self.held = asyncio.Event()

    def release(self) -> None:
        """The drain's GOAWAY has gone out: held calls run and answer."""
        if self.held is not None:
            self.held.set()

    async def settle(self, grace: float) -> bool:
        """Wait, at most ``grace`` seconds, until no inference request is being answered
        and every stream has ended. A stream the client keeps open ends (status OK) once it
        has had no request in flight for a moment's quiet, as an idle HTTP keep-alive
        connection is closed; ending it the moment its last answer went out would race a
        client sending its next request on it right then. True when no request is left
        running."""
        deadline = time.monotonic() + grace
        while (self.inflight or self._streams) and time.monotonic() < deadline:
            quiet = time.monotonic() - DRAIN_QUIET_SECS
            for stream in self._streams:
                if not stream.tasks and stream.last_active < quiet:
                    stream.end()
            await asyncio.sleep(0.01)
        return not self.inflight

    # -- health and metadata ---------------------------------------------------------------
    @rpc
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.plane.live())

    @rpc
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready())

    @rpc
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        version = check_version(request.version)
        return pb.ModelReadyResponse(ready=await self.plane.model_ready(request.name, version))

    @rpc
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        meta = self.plane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=meta.extensions
        )

    @rpc
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        meta = await self.plane.model_metadata(request.name, check_version(request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    @rpc
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        config = await self.plane.model_config(request.name, check_version(request.version))
        answer = pb.ModelConfigResponse()
        answer.config.CopyFrom(config)
        return answer

    @rpc
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        version = check_version(request.version)
        stats = self.plane.model_statistics(request.name or None, version)
        return pb.ModelStatisticsResponse(model_stats=[_statistics(s) for s in stats])

    # -- the repository extension ----------------------------------------------------------
    @rpc
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        _one_repository(request.repository_name)
        index = pb.RepositoryIndexResponse.ModelIndex
        rows = self.plane.repository_index(request.ready)
        return pb.RepositoryIndexResponse(models=[index(**row) for row in rows])

    @rpc
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        _one_repository(request.repository_name)
        config: str | None = None
        files: dict[str, bytes] = {}
        for key, param in request.parameters.items():
            choice = param.WhichOneof("parameter_choice")
            if key == "config":
                if choice != "string_param":
                    raise InvalidArgument(
                        "invalid value type for load parameter 'config', expected string_param."
                    )
                config = param.string_param
            elif key.startswith("file:"):
                if choice != "bytes_param":
                    raise InvalidArgument(
                        f"invalid value type for load parameter '{key}', expected bytes_param."
                    )
                files[key.removeprefix("file:")] = param.bytes_param
            else:
                raise InvalidArgument(f"unrecognized load parameter '{key}'.")
        await self.plane.load(request.model_name, config, files or None)
        return pb.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        _one_repository(request.repository_name)
        await self.plane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference -------------------------------------------------------------------------
    @rpc
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        self._begin()
        try:
            _, response = await self.plane.infer(
                request.model_name,
                check_version(request.model_version),
                lambda _: decode_request(request),
            )
        except DecoupledModel as exc:
            self.plane.request_failed(request.model_name, exc)  # modelyard_request_errors_total
            raise DecoupledModel(
                exc.message.replace(DECOUPLED_REFUSED, GRPC_DECOUPLED_REFUSED), exc.model
            ) from None
        except Exception as exc:
            self.plane.request_failed(request.model_name, exc)
            raise
        finally:
            self._end()
        if self.compression is not None:
            context.set_compression(self.compression)
        return encode_response(response)

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: Context,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Every request on the stream runs at once; its answers go out as they come, each
        naming the request's id. An error is a message on the stream, which goes on."""
        if self.gate.enabled:
            try:
                self.gate.check("ModelStreamInfer", context.invocation_metadata())
            except Refused as refused:
                await context.abort(refused.code, refused.details)
        if self.compression is not None:
            context.set_compression(self.compression)
        stream = _OpenStream()
        out, tasks = stream.out, stream.tasks
        active = 1  # the reader, then one per request being answered

        def finished(_: object = None) -> None:
            nonlocal active
            active -= 1
            stream.last_active = time.monotonic()
            if not active:
                out.put_nowait(None)

        async def answer(message: pb.ModelInferRequest) -> None:
            async for item in self._stream_one(message):
                out.put_nowait(item)

        async def read() -> None:
            nonlocal active
            try:
                async for message in request_iterator:
                    active += 1
                    stream.last_active = time.monotonic()
                    task = asyncio.create_task(answer(message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(finished)
            finally:
                finished()

        reader = asyncio.create_task(read())
        self._streams.add(stream)
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:  # the client went away (or the server stops): cancel the models' work
            self._streams.discard(stream)
            reader.cancel()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(reader, *tasks, return_exceptions=True)

    async def _stream_one(
        self, message: pb.ModelInferRequest
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        try:
            self._begin(refuse=True)
        except Unavailable as exc:
            yield stream_error(exc.message, message.id)
            return
        try:
            async for item in self._answer_on_stream(message):
                yield item
        finally:
            self._end()

    async def _answer_on_stream(
        self, message: pb.ModelInferRequest
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        name, request_id = message.model_name, message.id
        want_empty_final = (
            EMPTY_FINAL in message.parameters and message.parameters[EMPTY_FINAL].bool_param
        )
        try:
            version = check_version(message.model_version)
            config = await self.plane.model_config(name, version)
            decoupled = bool(config.model_transaction_policy.decoupled)
            _, responses = await self.plane.open_stream(
                name, version, lambda _: decode_request(message)
            )
        except Exception as exc:
            self.plane.request_failed(name, exc)
            yield stream_error(grpc_error(exc, name)[1], request_id)
            return
        ended = False  # a response carried the final flag: no empty one after it
        try:
            async for response in responses:
                ended = response.final or not decoupled
                yield encode_stream_response(response, final=ended)
        except Exception as exc:
            self.plane.request_failed(name, exc)
            model = name if isinstance(exc, ModelyardError) and exc.from_model else None
            yield stream_error(grpc_error(exc, name)[1], request_id, model)
            return
        finally:
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                await aclose()
        if decoupled and want_empty_final and not ended:
            yield empty_final(name, message.model_version, request_id)

    # -- what modelyard does not serve, answered as Triton does without it ----------------
    @rpc
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Context
    ) -> pb.SystemSharedMemoryStatusResponse:
        if request.name:
            raise _no_region("system", request.name)
        return pb.SystemSharedMemoryStatusResponse()

    @rpc
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Context
    ) -> pb.SystemSharedMemoryRegisterResponse:
        raise _NotServed("shared memory (system and CUDA)")

    @rpc
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Context
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        return pb.SystemSharedMemoryUnregisterResponse()  # none registered: nothing to do

    @rpc
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: Context
    ) -> pb.CudaSharedMemoryStatusResponse:
        if request.name:
            raise _no_region("CUDA", request.name)
        return pb.CudaSharedMemoryStatusResponse()

    @rpc
    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: Context
    ) -> pb.CudaSharedMemoryRegisterResponse:
        raise _NotServed("shared memory (system and CUDA)")

    @rpc
    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: Context
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        return pb.CudaSharedMemoryUnregisterResponse()

    @rpc
    async def TraceSetting(
        self, request: pb.TraceSettingRequest, context: Context
    ) -> pb.TraceSettingResponse:
        raise _NotServed("the trace extension")

    @rpc
    async def LogSettings(
        self, request: pb.LogSettingsRequest, context: Context
    ) -> pb.LogSettingsResponse:
        raise _NotServed("the logging extension (log settings; --log-verbose sets the level)")


class _OpenStream:
    """One ModelStreamInfer call: its answers' queue (None ends it), its requests in
    flight, and when it last read or answered one (the drain's quiet)."""

    __slots__ = ("ended", "last_active", "out", "tasks")

    def __init__(self) -> None:
        self.out: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.last_active = time.monotonic()
        self.ended = False

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.out.put_nowait(None)


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Standard gRPC health checking (``grpc.health.v1.Health``), as Triton answers it:
    ``Check`` is SERVING while the server is ready, for any service name; ``Watch`` is
    UNIMPLEMENTED."""

    def __init__(self, plane: DataPlane, gate: Gate) -> None:
        self.plane = plane
        self.gate = gate

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        if self.gate.enabled:
            try:
                self.gate.check("Check", context.invocation_metadata())
            except Refused as refused:
                await context.abort(refused.code, refused.details)
        status = health_pb2.HealthCheckResponse
        return status(status=status.SERVING if self.plane.ready() else status.NOT_SERVING)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "")
        yield health_pb2.HealthCheckResponse()  # pragma: no cover - abort raises


class _NotServed(Unsupported):
    """A Triton extension modelyard does not serve: UNIMPLEMENTED, naming it."""

    def __init__(self, feature: str) -> None:
        super().__init__(f"modelyard does not serve {feature}")


def _no_region(kind: str, name: str) -> ModelyardError:
    return NotFound(f"Unable to find {kind} shared memory region: '{name}'")


def _one_repository(name: str) -> None:
    if name:
        raise _RepositoryName()


class _RepositoryName(Unsupported):
    def __init__(self) -> None:
        super().__init__("'repository_name' specification is not supported")


def _duration(target: Any, source: Duration) -> None:
    target.count = source.count
    target.ns = source.ns


def _statistics(stats: ModelStats) -> pb.ModelStatistics:
    """A version's counters in Triton's message, from the same object HTTP serialises."""
    message = pb.ModelStatistics(
        name=stats.name,
        version=stats.version,
        last_inference=stats.last_inference,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    for key, duration in stats.durations.items():
        _duration(getattr(message.inference_stats, key), duration)
    for size, batch in sorted(stats.batches.items()):
        entry = message.batch_stats.add(batch_size=size)
        _duration(entry.compute_input, batch.compute_input)
        _duration(entry.compute_infer, batch.compute_infer)
        _duration(entry.compute_output, batch.compute_output)
    return message
