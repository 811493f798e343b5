"""The HTTP application: every HTTP port's requests, over the data plane.

``ModelyardApp`` routes a whole ``HttpRequest`` to the v2 or SageMaker route table (both
adapters over ``modelyard.dataplane``), applies the access gate and serves ``/metrics``. It
is built by the composition root (``modelyard.server.compose``), which owns the manager and
the data plane; it builds nothing itself. It is served by modelyard's own HTTP front end
(``_server.py``) or, being an ASGI application too, by uvicorn or any ASGI server (the
lifespan then starts and stops the server through ``lifespan``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol
from urllib.parse import unquote

from modelyard.dataplane import DataPlane
from modelyard.errors import ModelyardError
from modelyard.protocol._access import AccessPolicy, Group, sagemaker_group, v2_group
from modelyard.protocol._http import HttpRequest, HttpResponse, Route, too_large
from modelyard.protocol.errors import (
    challenge,
    sagemaker_container_error,
    sagemaker_error,
    v2_error,
)
from modelyard.protocol.sagemaker import INVOCATIONS, SageMakerRoutes
from modelyard.protocol.v2 import V2Routes
from modelyard.settings import ServerSettings

log = logging.getLogger("modelyard.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Prometheus text and its content type, rendered at scrape time
RenderMetrics = Callable[[], tuple[bytes, str]]

METRICS = re.compile(r"/metrics")


class Lifespan(Protocol):
    """What an ASGI server's lifespan starts and stops: the models (``server.compose``)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def _metrics_route(
    app: ModelyardApp, request: HttpRequest, p: dict[str, str]
) -> HttpResponse:
    return await app.handle_metrics(request)


async def _invoke_endpoint_route(
    app: ModelyardApp, request: HttpRequest, p: dict[str, str]
) -> HttpResponse:
    return await app.sagemaker.invoke_endpoint(request)


class ModelyardApp:
    """``handle`` serves the HTTP port, ``handle_sagemaker`` and ``handle_metrics`` the
    container face's and the metrics port; ``__call__`` is the same as ASGI."""

    def __init__(
        self,
        settings: ServerSettings,
        plane: DataPlane,
        access: AccessPolicy,
        render_metrics: RenderMetrics,
        lifespan: Lifespan,
    ) -> None:
        self.settings = settings
        self.plane = plane
        # who may call what (docs/security.md)
        self.access = access
        self.render_metrics = render_metrics
        self.lifespan = lifespan
        self.v2 = V2Routes(plane, settings.max_input_size)
        self.sagemaker = SageMakerRoutes(
            plane,
            settings.max_input_size,
            # SAGEMAKER_TRITON_DEFAULT_MODEL_NAME: the model SageMaker's /invocations serves
            default_model=settings.sagemaker_default_model,
            model_roots=settings.sagemaker_model_roots,
            ping_mode=settings.sagemaker_ping_mode,
        )

    def error_response(self, path: str, exc: BaseException) -> HttpResponse:
        """An error raised before routing (an oversize body), in the protocol of ``path``."""
        if path.startswith("/endpoints/"):
            status, body, headers = sagemaker_error(exc)
            return HttpResponse(status, body, headers=headers)
        return HttpResponse(*v2_error(exc))

    def refusal(
        self, handler: Callable[..., Any], path: str, headers: Mapping[bytes, bytes]
    ) -> HttpResponse | None:
        """The access gate (``protocol/_access.py``) for a request to ``handler``'s port:
        None lets it through, else the refusal in that face's error format.

        From the path and headers alone, so the front ends call it before reading a body
        (an unauthenticated client cannot make the server take in 64 MiB first), and the
        handlers call it again for requests that reach them any other way.
        """
        if not self.access.enabled:
            return None
        if handler == self.handle_sagemaker:
            group, answer = sagemaker_group(path), _container_refusal
        elif handler == self.handle_metrics or path == "/metrics":
            group, answer = None, _v2_refusal
        elif path.startswith("/endpoints/"):
            group, answer = Group.INFERENCE, _client_face_refusal
        else:
            group, answer = v2_group(path), _v2_refusal
        try:
            self.access.check(group, headers, path)
        except ModelyardError as exc:
            status, body, extra = answer(exc)
            return HttpResponse(status, body, headers=extra)
        return None

    def routes(self) -> dict[str, list[Route]]:
        """Every route of each port, in the order ``handle`` tries them: ``"main"`` (the HTTP
        port) and ``"sagemaker"`` (the container face's port). ``handle`` itself tests the
        two paths it serves before the v2 table with plain string checks (the inference path
        pays no extra regex); the OpenAPI drift test checks the description against this
        table and every described route against the running server."""
        main = [
            Route("GET", METRICS, _metrics_route),
            Route("POST", INVOCATIONS, _invoke_endpoint_route),
            *self.v2.table,
        ]
        return {"main": main, "sagemaker": list(self.sagemaker.table)}

    async def handle(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        if self.access.enabled:
            refused = self.refusal(self.handle, path, request.headers)
            if refused is not None:
                return refused
        if path == "/metrics":
            return self._metrics(request)
        if path.startswith("/endpoints/"):  # SageMaker's InvokeEndpoint
            return await self.sagemaker.invoke_endpoint(request)
        return await self.v2.handle(request)

    async def handle_sagemaker(self, request: HttpRequest) -> HttpResponse:
        """SageMaker's container face (``--allow-sagemaker``), served on its own port."""
        if self.access.enabled:
            refused = self.refusal(self.handle_sagemaker, request.path, request.headers)
            if refused is not None:
                return refused
        return await self.sagemaker.handle(request, request.query)

    async def sagemaker_asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """SageMaker's container face as an ASGI application, for a second ASGI server
        (``--http-server uvicorn``). Models start and stop with the main application's
        lifespan, so this one has none."""
        if scope["type"] == "http":
            await self._asgi_http(scope, receive, send, self.handle_sagemaker)

    async def handle_metrics(self, request: HttpRequest) -> HttpResponse:
        """The metrics port: Prometheus text (:meth:`_metrics`).

        No restricted group covers it (as in Triton); a bearer token does, when tokens are
        on, on the HTTP port and the metrics port alike: it names every model served.
        """
        if self.access.enabled:
            refused = self.refusal(self.handle_metrics, request.path, request.headers)
            if refused is not None:
                return refused
        return self._metrics(request)

    def _metrics(self, request: HttpRequest) -> HttpResponse:
        """Prometheus text: Triton's nv_inference_* families plus the model store's."""
        if request.path != "/metrics":
            return HttpResponse(404, b'{"error":"Not Found"}')
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(405, b'{"error":"Method Not Allowed"}')
        body, content_type = self.render_metrics()
        return HttpResponse(200, body, content_type.encode())

    # -- ASGI --------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point, for running under any ASGI server (uvicorn, granian, ...)."""
        kind = scope["type"]
        if kind == "http":
            await self._asgi_http(scope, receive, send, self.handle)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _asgi_http(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        handler: Callable[[HttpRequest], Awaitable[HttpResponse]],
    ) -> None:
        headers = {bytes(k): bytes(v) for k, v in scope["headers"]}
        raw_path = scope.get("raw_path")
        path = unquote(raw_path.decode("latin-1")) if raw_path else scope["path"]
        refused = self.refusal(handler, path, headers) if self.access.enabled else None
        if refused is not None:  # before the body: refused clients cost no upload
            response = refused
        else:
            try:
                body = await _read_body(receive, self.settings.max_input_size)
            except Exception as exc:
                response = HttpResponse(*v2_error(exc))
            else:
                request = HttpRequest(
                    scope["method"], path, headers, body, scope.get("query_string") or b""
                )
                response = await handler(request)
        if response.stream is not None:
            await self._send_stream(response, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type),
                    (b"content-length", str(len(response.body)).encode()),
                    *response.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _send_stream(self, response: HttpResponse, send: Send) -> None:
        assert response.stream is not None
        headers = [(b"content-type", response.content_type), *response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        try:
            if response.body:
                await send({"type": "http.response.body", "body": response.body, "more_body": True})
            async for chunk in response.stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            aclose = getattr(response.stream, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.lifespan.start()
                except Exception as exc:  # a broken repository must still say why
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.lifespan.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _v2_refusal(exc: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return (*v2_error(exc), challenge(exc))


def _container_refusal(exc: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return (*sagemaker_container_error(exc), challenge(exc))


def _client_face_refusal(exc: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return sagemaker_error(exc)  # its 401 carries the challenge already


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)
