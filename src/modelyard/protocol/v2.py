"""KServe v2 / Open Inference Protocol over HTTP, as Triton serves it: the route table.

Handlers only translate between HTTP and the data plane (``modelyard.dataplane``): every
rule of the API (readiness, metadata, statistics, model control, load refusals, the request
path's order) lives there, shared with the other front ends. The table is matched in order,
inference first, because inference is what a busy server mostly receives.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from modelyard.dataplane import DataPlane
from modelyard.errors import InvalidArgument, ModelyardError
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
from modelyard.protocol.errors import v2_error
from modelyard.protocol.openapi import spec_json
from modelyard.repository import config_to_json
from modelyard.scheduling.signature import Signature
from modelyard.types import InferRequest, InferResponse
from modelyard.wire.generate import (
    ONE_RESPONSE_ONLY,
    SSE_CONTENT_TYPE,
    decode_generate_request,
    encode_generate_response,
    sse_event,
)
from modelyard.wire.v2 import decode_infer_request, encode_infer_response

Handler = Callable[["V2Routes", HttpRequest, dict[str, str]], Awaitable[HttpResponse]]

_M = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[0-9]+))?"


class V2Routes:
    """Route table plus handlers; ``dispatch`` returns False when no route matches."""

    def __init__(self, plane: DataPlane, max_input_size: int) -> None:
        self.plane = plane
        self.max_input_size = max_input_size
        self.table: list[Route] = [
            Route("POST", re.compile(_M + "/infer"), V2Routes.infer),
            Route("POST", re.compile(_M + "/generate"), V2Routes.generate),
            Route("POST", re.compile(_M + "/generate_stream"), V2Routes.generate_stream),
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
        return await dispatch(self, self.table, request, v2_error)

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
        infer_request, response = await self.plane.infer(
            model, version, lambda _: decode_infer_request(body, header_length, model, version)
        )
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
    async def _generate_stream(
        self, request: HttpRequest, p: dict[str, str]
    ) -> AsyncIterator[InferResponse]:
        """The model's responses; errors before the first (unknown model, malformed body,
        validation) are raised here, the model's own come from the iterator."""
        model = p["model"]
        version = p.get("version", "")

        def decode(sig: Signature) -> InferRequest:
            body = decoded_body(request, self.max_input_size)
            types = {name: spec.datatype for name, spec in sig.inputs.items()}
            return decode_generate_request(body, model, version, types, sig.batched)

        _, stream = await self.plane.open_stream(model, version, decode)
        return stream

    async def generate(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        """Exactly one response; a model that sends another number is answered with
        Triton's error (status 200, as Triton does)."""
        stream = await self._generate_stream(request, p)
        responses = []
        try:
            async for response in stream:
                responses.append(response)
        except Exception as exc:
            if not responses:
                status, body = _generate_error(exc)
                return HttpResponse(status, body)
        finally:
            await _aclose(stream)
        if len(responses) != 1:
            return HttpResponse(200, orjson.dumps({"error": ONE_RESPONSE_ONLY}))
        return HttpResponse(200, encode_generate_response(responses[0]))

    async def generate_stream(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        """Server-sent events, one per response. A malformed request is a plain JSON error;
        a model error before any response sets the status, later ones become an event."""
        stream = await self._generate_stream(request, p)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            return HttpResponse(200, b"", SSE_CONTENT_TYPE)
        except Exception as exc:
            await _aclose(stream)
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
        return HttpResponse(200 if self.plane.ready() else 400, b"")

    async def server_metadata(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        return HttpResponse(200, orjson.dumps(self.plane.server_metadata()))

    async def openapi(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        """modelyard's own route (Triton has none): the API's OpenAPI description."""
        return HttpResponse(200, spec_json())

    async def model_ready(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        if await self.plane.model_ready(p["model"], p.get("version", "")):
            return HttpResponse(200, b"")
        return HttpResponse(400, b'{"error":"Model version not ready"}')

    async def model_metadata(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        metadata = await self.plane.model_metadata(p["model"], p.get("version", ""))
        return HttpResponse(200, orjson.dumps(metadata))

    async def model_config(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        config = await self.plane.model_config(p["model"], p.get("version", ""))
        return HttpResponse(200, orjson.dumps(config_to_json(config)))

    async def stats(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        stats = self.plane.model_statistics(p.get("model"), p.get("version", ""))
        return HttpResponse(200, orjson.dumps({"model_stats": [s.as_json() for s in stats]}))

    # -- repository extension --------------------------------------------------------------
    async def repository_index(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        body = decoded_body(request, self.max_input_size)
        ready_only = False
        if body.strip():
            try:
                ready_only = bool(orjson.loads(body).get("ready", False))
            except (orjson.JSONDecodeError, AttributeError):
                raise InvalidArgument("failed to parse the request JSON buffer") from None
        return HttpResponse(200, orjson.dumps(self.plane.repository_index(ready_only)))

    async def repository_load(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        model = p["model"]
        self.plane.check_model_control()  # before the body is read, as Triton answers
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
        # refused before anything is decoded or written
        self.plane.check_load(model, config, any(key.startswith("file:") for key in params))
        files: dict[str, bytes] = {}
        for key, value in params.items():
            if not key.startswith("file:"):
                continue
            try:  # tritonclient sends file contents base64-encoded
                files[key.removeprefix("file:")] = base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise InvalidArgument(f"the '{key}' parameter is not valid base64") from None
        await self.plane.load(model, config, files or None)
        return HttpResponse(200, b"")

    async def repository_unload(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        await self.plane.unload(p["model"])
        return HttpResponse(200, b"")


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
        await _aclose(stream)


async def _aclose(stream: AsyncIterator[InferResponse]) -> None:
    """Closing a stream early cancels the model's work (a plain model's is one response)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
