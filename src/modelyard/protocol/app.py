"""Composition root: settings -> manager -> routes -> one application.

Everything the server needs is built here, at start-up, and passed down; nothing is created
at import time and there are no globals, so several apps can live in one process (tests).
The application is served by modelyard's own HTTP front end (``_server.py``) or, being an
ASGI application too, by any ASGI server.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from modelyard.dataplane import DataPlane, DataPlaneOptions
from modelyard.errors import ModelyardError
from modelyard.manager.manager import ManagerOptions, ModelManager
from modelyard.metrics import CustomMetrics, VersionSample, build_registry, render
from modelyard.protocol._access import (
    Group,
    build_policy,
    describe_address,
    exposure,
    is_loopback,
    sagemaker_group,
    v2_group,
)
from modelyard.protocol._http import HttpRequest, HttpResponse, Route, too_large
from modelyard.protocol.errors import (
    challenge,
    sagemaker_container_error,
    sagemaker_error,
    v2_error,
)
from modelyard.protocol.sagemaker import INVOCATIONS, SageMakerRoutes
from modelyard.protocol.v2 import V2Routes
from modelyard.runtimes import children
from modelyard.runtimes.base import RuntimeOptions
from modelyard.runtimes.python.environments import EnvironmentOptions
from modelyard.settings import ServerSettings

log = logging.getLogger("modelyard.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

METRICS = re.compile(r"/metrics")


async def _metrics_route(
    app: ModelyardApp, request: HttpRequest, p: dict[str, str]
) -> HttpResponse:
    return await app.handle_metrics(request)


async def _invoke_endpoint_route(
    app: ModelyardApp, request: HttpRequest, p: dict[str, str]
) -> HttpResponse:
    return await app.sagemaker.invoke_endpoint(request)


class ModelyardApp:
    """The application: ``start``/``stop`` load and unload models; ``handle`` serves HTTP."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        # who may call what (docs/security.md); a malformed token file stops the start here
        self.access, self.access_warnings = build_policy(
            settings.http_restricted_api, settings.auth_token_file
        )
        self.custom_metrics = CustomMetrics()
        self.manager = ModelManager(
            ManagerOptions(
                repository=settings.model_repository,
                autocomplete=settings.autocomplete,
                control_mode=settings.model_control_mode,
                startup_models=settings.load_models,
                runtime=RuntimeOptions(
                    default_max_batch_size=settings.default_max_batch_size,
                    custom_metrics=self.custom_metrics,
                    python_execute_timeout=settings.python_execute_timeout,
                    python_start_timeout=settings.model_load_timeout,
                    python_envs=_environment_options(settings),
                ),
                inline_threshold_ns=int(settings.inline_threshold_us * 1000),
                load_wait_timeout=settings.load_wait_timeout,
                repository_poll_secs=settings.repository_poll_secs,
                memory_budget=settings.memory_budget,
                eviction_policy=settings.eviction_policy,
                cache_dir=settings.model_cache_dir,
                cache_max_bytes=settings.model_cache_size,
                gpu_limits=dict(settings.gpu_limits),
            )
        )
        self.plane = DataPlane(
            self.manager,
            DataPlaneOptions(
                control_mode=settings.model_control_mode,
                strict_readiness=settings.strict_readiness,
                allow_load_files=settings.allow_model_load_files,
            ),
        )
        self.v2 = V2Routes(self.plane, settings.max_input_size)
        self.sagemaker = SageMakerRoutes(
            self.plane,
            settings.max_input_size,
            # SAGEMAKER_TRITON_DEFAULT_MODEL_NAME: the model SageMaker's /invocations serves
            default_model=settings.sagemaker_default_model,
            model_roots=settings.sagemaker_model_roots,
            ping_mode=settings.sagemaker_ping_mode,
        )
        self.metrics = build_registry(
            self._metrics_snapshot, self.manager.counters, self.custom_metrics
        )

    def _metrics_snapshot(self) -> list[VersionSample]:
        samples = []
        for name in sorted(self.manager.models):
            record = self.manager.models[name]
            for vrec in self.manager.stats_records(name):
                runner = vrec.runner
                samples.append(
                    VersionSample(
                        vrec.stats,
                        pending=runner.inflight if runner is not None else 0,
                        load_seconds=record.usage.load_seconds if runner is not None else None,
                    )
                )
        return samples

    def begin_drain(self) -> None:
        """Readiness turns false at once; requests already in flight carry on."""
        self.plane.begin_drain()

    def log_exposure(self) -> None:
        """Say at start-up where the server listens and who may use what there: the one
        place an operator sees that the repository API is open to the network."""
        s = self.settings
        ports = [f"HTTP on {describe_address(s.http_address, s.http_port)}"]
        if s.allow_metrics and s.metrics_port:
            ports.append(f"metrics on {describe_address(s.http_address, s.metrics_port)}")
        if s.allow_sagemaker:
            ports.append(f"SageMaker on {describe_address(s.http_address, s.sagemaker_port)}")
        if s.grpc.enabled:
            grpc_address = s.grpc.address or s.http_address
            ports.append(f"gRPC on {describe_address(grpc_address, s.grpc.port)}")
        # load/unload: the v2 repository API in these modes, SageMaker's /models when it is on
        repository_api = s.model_control_mode in ("explicit", "on-demand") or s.allow_sagemaker
        summary, open_management = exposure(
            self.access, repository_api=repository_api, load_files=s.allow_model_load_files
        )
        log.info("access: %s: %s", ", ".join(ports), summary)
        for warning in self.access_warnings:
            log.warning("%s", warning)
        # on loopback too when files are allowed: every local user could run code as us
        if open_management and (s.allow_model_load_files or not is_loopback(s.http_address)):
            log.warning(
                "the model-repository API (load/unload%s) is open to anyone who can reach "
                "%s:%d: restrict it (--http-restricted-api model-repository:<header>=<value> "
                "or --auth-token-file), bind --http-address 127.0.0.1, or use "
                "--model-control-mode none (docs/security.md)",
                ", with uploaded files: code execution" if s.allow_model_load_files else "",
                s.http_address,
                s.http_port,
            )
        self._log_grpc_exposure(repository_api)

    def _log_grpc_exposure(self, repository_api: bool) -> None:
        """gRPC has its own restrictions (``--grpc-restricted-protocol``, as in Triton):
        say so when its repository RPCs stay open while HTTP's are closed or exposed."""
        s = self.settings
        grpc_address = s.grpc.address or s.http_address
        restricted = {group for group, _, _ in s.grpc.restricted_protocol}
        if not (s.grpc.enabled and repository_api) or self.access.tokens:
            return
        if "model-repository" in restricted:
            return
        if s.allow_model_load_files or not is_loopback(grpc_address) or self.access.enabled:
            log.warning(
                "the gRPC model-repository RPCs (load/unload) are open to anyone who can reach "
                "%s:%d: restrict them (--grpc-restricted-protocol "
                "model-repository:<key>=<value> or --auth-token-file), or --allow-grpc=false "
                "(docs/security.md)",
                grpc_address,
                s.grpc.port,
            )

    async def start(self) -> None:
        """Load the models; raises when ``--exit-on-error`` says a failed load is fatal."""
        self.log_exposure()
        await self.manager.start()
        failed = [r for r in self.manager.index() if r.get("state") != "READY"]
        if failed and self.settings.exit_on_error:
            raise RuntimeError(f"models failed to load (--exit-on-error): {failed}")

    async def stop(self) -> None:
        """Unload every model; then no child process outlives the server, whatever was
        still running (a worker hung in initialize or execute, an environment build): the
        last step runs even when the exit timeout cancels the unloads."""
        try:
            await self.manager.shutdown()
        finally:
            left = children.live_pids()
            if left:
                logging.getLogger("modelyard.server").warning(
                    "killing %d child process(es) still running at exit: %s", len(left), left
                )
                children.kill_all()

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
        body, content_type = render(self.metrics, self.custom_metrics)
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
                    await self.start()
                except Exception as exc:  # a broken repository must still say why
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
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


def build_app(settings: ServerSettings) -> ModelyardApp:
    return ModelyardApp(settings)


def _environment_options(settings: ServerSettings) -> EnvironmentOptions:
    """Where Python models' environments come from (``--python-env-*``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return EnvironmentOptions(
        cache_dir=(settings.python_env_dir or Path(base) / "modelyard" / "envs").resolve(),
        build=settings.python_env_build,
        index_url=settings.python_env_index_url,
        # a local folder is taken from where the server started, not from the model's folder
        find_links=tuple(
            link if "://" in link else str(Path(link).resolve())
            for link in settings.python_env_find_links
        ),
        no_index=settings.python_env_no_index,
    )
