"""KServe v2 / Open Inference Protocol over HTTP, as Triton serves it: the route table.

Handlers only translate between HTTP and the manager; every decision about models lives in
the manager and below. The table is matched in order, inference first, because inference is
what a busy server mostly receives.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from modelyard import __version__
from modelyard.errors import InvalidArgument, ModelyardError, PermissionDenied, Unavailable
from modelyard.manager.manager import ModelManager
from modelyard.protocol._http import (
    JSON,
    OCTET,
    HttpRequest,
    HttpResponse,
    Route,
    choose_encoding,
    compress,
    decoded_body,
    dispatch,
)
from modelyard.protocol.errors import request_failed, v2_error
from modelyard.protocol.openapi import spec_json
from modelyard.repository import config_to_json
from modelyard.scheduling.signature import signature_of
from modelyard.types import InferRequest, InferResponse
from modelyard.wire.generate import (
    ONE_RESPONSE_ONLY,
    SSE_CONTENT_TYPE,
    decode_generate_request,
    encode_generate_response,
    sse_event,
)
from modelyard.wire.v2 import decode_infer_request, encode_infer_response

EXTENSIONS = [
    "classification",
    "model_repository",
    "model_configuration",
    "binary_tensor_data",
    "parameters",
    "statistics",
]

Handler = Callable[["V2Routes", HttpRequest, dict[str, str]], Awaitable[HttpResponse]]

_M = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[0-9]+))?"


class V2Routes:
    """Route table plus handlers; ``dispatch`` returns False when no route matches."""

    def __init__(self, manager: ModelManager, max_input_size: int, control_mode: str) -> None:
        self.manager = manager
        self.max_input_size = max_input_size
        self.control_mode = control_mode
        self.draining = False
        self.strict_readiness = False
        # the load API's file: parameters run code sent over the network: off unless the
        # operator says so (--allow-model-load-files)
        self.allow_load_files = False
        self.table: list[Route] = [
            Route("POST", re.compile(_M + "/infer"), V2Routes.infer, counted=True),
            Route("POST", re.compile(_M + "/generate"), V2Routes.generate, counted=True),
            Route(
                "POST", re.compile(_M + "/generate_stream"), V2Routes.generate_stream, counted=True
            ),
            Route("GET", re.compile(r"/v2/health/live"), V2Routes.live),
            Route("GET", re.compile(r"/v2/health/ready"), V2Routes.ready),
            Route("GET", re.compile(r"/v2"), V2Routes.server_metadata),
            Route("GET", re.compile(r"/v2/openapi\.json"), V2Routes.openapi),
            Route("GET", re.compile(r"/v2/models/stats"), V2Routes.stats),
            Route("GET", re.compile(_M + "/ready"), V2Routes.model_ready),
            Route("GET", re.compile(_M + "/config"), V2Routes.model_config),
            Route("GET", re.compile(_M + "/stats"), V2Routes.stats),
            Route("GET", re.compile(_M), V2Routes.model_metadata),
            Route("POST", re.compile(r"/v2/repository/index"), V2Routes.repository_index),
            Route(
                "POST",
                re.compile(r"/v2/repository/models/(?P<model>[^/]+)/load"),
                V2Routes.repository_load,
            ),
            Route(
                "POST",
                re.compile(r"/v2/repository/models/(?P<model>[^/]+)/unload"),
                V2Routes.repository_unload,
            ),
        ]

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Route one request; every error becomes Triton's ``{"error": ...}`` answer."""
        return await dispatch(self, self.table, request, v2_error, self._failed)

    def _failed(self, model: str | None, exc: BaseException) -> None:
        request_failed(self.manager, model, exc)  # modelyard_request_errors_total

    # -- inference -------------------------------------------------------------------------
    async def infer(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        body = decoded_body(request, self.max_input_size)
        raw_len = request.headers.get(b"inference-header-content-length")
        header_length = None
        if raw_len is not None:
            if not raw_len.strip().isdigit():
                raise InvalidArgument(
                    "Unable to parse Inference-Header-Content-Length: "
                    f"'{raw_len.decode('latin-1')}'"
                )
            header_length = int(raw_len)
        model = p["model"]
        version = p.get("version", "")
        runner = await self.manager.runner_for(model, version)
        infer_request = decode_infer_request(body, header_length, model, version)
        response = await runner.infer(infer_request)
        out, json_len = encode_infer_response(
            response, infer_request.outputs, infer_request.binary_data_output
        )
        extra: list[tuple[bytes, bytes]] = []
        if json_len is not None:
            extra.append((b"inference-header-content-length", str(json_len).encode()))
        encoding = choose_encoding(request)
        if encoding is not None:
            out = compress(out, encoding)
            extra.append((b"content-encoding", encoding))
        return HttpResponse(200, out, OCTET if json_len is not None else JSON, extra)

    # -- the generate extension (plain JSON; decoupled models stream) -----------------------
    async def _generate_request(
        self, request: HttpRequest, p: dict[str, str]
    ) -> tuple[Any, InferRequest]:
        model = p["model"]
        version = p.get("version", "")
        runner = await self.manager.runner_for(model, version)
        sig = runner.signature
        body = decoded_body(request, self.max_input_size)
        types = {name: spec.datatype for name, spec in sig.inputs.items()}
        return runner, decode_generate_request(body, model, version, types, sig.batched)

    async def generate(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        """Exactly one response; a model that sends another number is answered with
        Triton's error (status 200, as Triton does)."""
        runner, infer_request = await self._generate_request(request, p)
        responses = []
        stream = runner.stream(infer_request)
        try:
            async for response in stream:
                responses.append(response)
        except Exception as exc:
            if not responses:
                status, body = _generate_error(exc)
                return HttpResponse(status, body)
        finally:
            await stream.aclose()
        if len(responses) != 1:
            return HttpResponse(200, orjson.dumps({"error": ONE_RESPONSE_ONLY}))
        return HttpResponse(200, encode_generate_response(responses[0]))

    async def generate_stream(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        """Server-sent events, one per response. A malformed request is a plain JSON error;
        a model error before any response sets the status, later ones become an event."""
        runner, infer_request = await self._generate_request(request, p)
        stream = runner.stream(infer_request)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            return HttpResponse(200, b"", SSE_CONTENT_TYPE)
        except Exception as exc:
            await stream.aclose()
            status, body = _generate_error(exc)
            return HttpResponse(status, sse_event(body), SSE_CONTENT_TYPE)
        return HttpResponse(
            200,
            sse_event(encode_generate_response(first)),
            SSE_CONTENT_TYPE,
            stream=_events(stream),
        )

    # -- health and metadata ---------------------------------------------------------------
    async def live(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        return HttpResponse(200, b"")

    async def ready(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        ok = not self.draining
        if ok and self.strict_readiness:
            ok = all(row.get("state") == "READY" for row in self.manager.index())
        return HttpResponse(200 if ok else 400, b"")

    async def server_metadata(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        body = {"name": "modelyard", "version": __version__, "extensions": EXTENSIONS}
        return HttpResponse(200, orjson.dumps(body))

    async def openapi(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        """modelyard's own route (Triton has none): the API's OpenAPI description."""
        return HttpResponse(200, spec_json())

    async def model_ready(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        if await self.manager.is_ready(p["model"], p.get("version", "")):
            return HttpResponse(200, b"")
        return HttpResponse(400, b'{"error":"Model version not ready"}')

    async def model_metadata(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        model, version = p["model"], p.get("version", "")
        config = await self.manager.config_for(model, version)
        sig = signature_of(config)
        body = {
            "name": config.name,
            "versions": [version] if version else self.manager.served_versions(model),
            "platform": config.platform or config.backend,
            "inputs": [
                _meta(s.name, s.datatype, s.full_shape(sig.batched)) for s in sig.inputs.values()
            ],
            "outputs": [
                _meta(s.name, s.datatype, s.full_shape(sig.batched)) for s in sig.outputs.values()
            ],
        }
        return HttpResponse(200, orjson.dumps(body))

    async def model_config(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        config = await self.manager.config_for(p["model"], p.get("version", ""))
        return HttpResponse(200, orjson.dumps(config_to_json(config)))

    async def stats(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        model, version = p.get("model"), p.get("version", "")
        records = self.manager.stats_records(model)
        if version:
            records = [r for r in records if r.version == version]
        if model is not None and not records:  # Triton's texts, and its 400
            known = self.manager.models.get(model)
            raise InvalidArgument(
                f"requested model version is not available for model '{model}'"
                if version and known is not None and known.default is not None
                else f"requested model '{model}' is not available"
            )
        body = {"model_stats": [r.stats.as_json() for r in records]}
        return HttpResponse(200, orjson.dumps(body))

    # -- repository extension --------------------------------------------------------------
    async def repository_index(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        body = decoded_body(request, self.max_input_size)
        ready_only = False
        if body.strip():
            try:
                ready_only = bool(orjson.loads(body).get("ready", False))
            except (orjson.JSONDecodeError, AttributeError):
                raise InvalidArgument("failed to parse the request JSON buffer") from None
        return HttpResponse(200, orjson.dumps(self.manager.index(ready_only)))

    def _explicit_only(self) -> None:
        # Triton's text and status for its modes; on-demand serves the API too (pre-loading)
        if self.control_mode not in ("explicit", "on-demand"):
            raise Unavailable("explicit model load / unload is not allowed if polling is enabled")

    async def repository_load(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        self._explicit_only()
        body = decoded_body(request, self.max_input_size)
        params: dict[str, Any] = {}
        if body.strip():
            try:
                params = orjson.loads(body).get("parameters") or {}
            except (orjson.JSONDecodeError, AttributeError):
                raise InvalidArgument("failed to parse the request JSON buffer") from None
        if not isinstance(params, dict):
            raise InvalidArgument("the request's 'parameters' must be a JSON object")
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidArgument("the 'config' parameter must be a JSON string")
        if not self.allow_load_files:  # refused before anything is decoded or written
            _refuse_code_from_request(p["model"], params, config)
        files: dict[str, bytes] = {}
        for key, value in params.items():
            if not key.startswith("file:"):
                continue
            try:  # tritonclient sends file contents base64-encoded
                files[key.removeprefix("file:")] = base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise InvalidArgument(f"the '{key}' parameter is not valid base64") from None
        await self.manager.load(p["model"], config, files or None)
        return HttpResponse(200, b"")

    async def repository_unload(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        self._explicit_only()
        await self.manager.unload(p["model"])
        return HttpResponse(200, b"")


LOAD_FILES_DISABLED = (
    "failed to load '{model}': loading a model with 'file:' parameters (model files sent "
    "with the request) is disabled on this server; start it with "
    "--allow-model-load-files=true to allow it (docs/security.md)"
)


def _refuse_code_from_request(model: str, params: dict[str, Any], config: str | None) -> None:
    """Refuse a load that would run code the repository does not hold.

    ``file:`` parameters are the model's files themselves (a ``model.py`` is code). A
    ``config`` override cannot add files, and the model file and a relative or
    ``$$TRITON_MODEL_DIRECTORY`` ``EXECUTION_ENV_PATH`` stay inside the model's folder, but
    an absolute ``EXECUTION_ENV_PATH`` would run a Python interpreter from anywhere on the
    host: that needs the same switch. A config that does not parse is left to the load to
    report.
    """
    if any(key.startswith("file:") for key in params):
        raise PermissionDenied(LOAD_FILES_DISABLED.format(model=model))
    if config is None:
        return
    try:
        parsed = orjson.loads(config)
        env_path = parsed["parameters"]["EXECUTION_ENV_PATH"]["string_value"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return
    if isinstance(env_path, str):
        path = env_path.strip()
        if path.startswith("/"):
            raise PermissionDenied(
                f"failed to load '{model}': a 'config' parameter with an absolute "
                "EXECUTION_ENV_PATH runs an environment from outside the model repository; "
                "start the server with --allow-model-load-files=true to allow it"
            )


def _meta(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def _generate_error(exc: BaseException) -> tuple[int, bytes]:
    """Triton's generate extension answers a model's own error (its first response) with
    400, whatever the error's code; the server's errors keep their status."""
    status, body = v2_error(exc)
    return (400 if isinstance(exc, ModelyardError) and exc.from_model else status), body


async def _events(stream: AsyncIterator[InferResponse]) -> AsyncIterator[bytes]:
    """The rest of a generate stream as events; an error ends it as an ``error`` event."""
    try:
        async for response in stream:
            yield sse_event(encode_generate_response(response))
    except Exception as exc:
        _, body = v2_error(exc)
        yield sse_event(body)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
