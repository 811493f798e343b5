"""The HTTP exchange the handlers see: a whole request in, a whole response out.

Inference requests and responses are small and complete, so handlers almost never stream
(only the generate extension's server-sent events do: ``HttpResponse.stream``): the front
end (modelyard's own ``_server.py``, or uvicorn through ``ModelyardApp.__call__``) reads the body
with the size cap applied, and writes the response in one piece. Content codings are handled
here, so both front ends behave the same.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import InvalidArgument, PayloadTooLarge, Unsupported

JSON = b"application/json"
OCTET = b"application/octet-stream"


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str  # percent-decoded
    headers: dict[bytes, bytes]  # lower-case names; a repeated header keeps its last value
    body: bytes
    query: bytes = b""  # the raw query string, after "?" (SageMaker's List Models reads it)


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # a streamed answer (server-sent events): ``body`` goes first, then each chunk as it
    # comes, with chunked transfer coding; closing the iterator early cancels the work
    stream: AsyncIterator[bytes] | None = None


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body exceeds the maximum allowed value of {limit} bytes. "
        "Use --http-max-input-size to increase the limit."
    )


def decoded_body(request: HttpRequest, limit: int) -> bytes:
    """The body with its Content-Encoding undone, refusing to grow past ``limit`` bytes.

    The limit applies to the decompressed size too, so a small gzip bomb is refused after
    ``limit`` bytes of output rather than filling memory.
    """
    encoding = request.headers.get(b"content-encoding")
    if not encoding or encoding.strip().lower() == b"identity":
        return request.body
    encoding = encoding.strip().lower()
    if encoding in (b"gzip", b"x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise Unsupported("Unsupported compression type")  # Triton's text and status (501)
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(request.body, limit + 1)
    except zlib.error as exc:
        raise InvalidArgument(
            f"failed to decompress request body ({encoding.decode()}): {exc}"
        ) from None
    if len(out) > limit or d.unconsumed_tail:
        raise too_large(limit)
    if not d.eof:
        raise InvalidArgument(
            f"failed to decompress request body ({encoding.decode()}): truncated data"
        )
    return out


def choose_encoding(request: HttpRequest) -> bytes | None:
    """gzip or deflate when the client's Accept-Encoding allows it (gzip preferred)."""
    accept = request.headers.get(b"accept-encoding")
    if not accept:
        return None
    offered = {p.split(b";")[0].strip().lower(): p for p in accept.split(b",")}
    for enc in (b"gzip", b"deflate"):
        part = offered.get(enc)
        if part is not None and not part.replace(b" ", b"").endswith(b"q=0"):
            return enc
    return None


def compress(body: bytes, encoding: bytes) -> bytes:
    if encoding == b"gzip":
        return gzip.compress(body, compresslevel=6, mtime=0)
    return zlib.compress(body, 6)


RouteHandler = Callable[[Any, HttpRequest, dict[str, str]], Awaitable[HttpResponse]]
ErrorBody = Callable[[BaseException, str | None], tuple[int, bytes]]
# told of an error a counted route raised: (the route's model parameter, the error)
FailureHook = Callable[[str | None, BaseException], None]


@dataclass(frozen=True, slots=True)
class Route:
    """One row of a route table: method, full-path pattern (named groups are parameters)."""

    method: str
    pattern: re.Pattern[str]
    handler: RouteHandler
    counted: bool = False  # an inference route: dispatch tells its ``failed`` hook of errors


def match_route(
    table: Sequence[Route], method: str, path: str
) -> tuple[Route | None, dict[str, str], bool]:
    """``(route, params, allowed)``: the first route of ``table`` that serves ``method`` on
    ``path`` (HEAD is served as GET), its path parameters, and whether some route matched
    the path with another method (a 405 rather than a 404). ``dispatch`` routes with it, and
    the OpenAPI drift test checks the published description against it."""
    allowed = False
    for route in table:
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        if route.method != method and not (method == "HEAD" and route.method == "GET"):
            allowed = True
            continue
        return route, {k: v for k, v in match.groupdict().items() if v is not None}, allowed
    return None, {}, allowed


async def dispatch(
    owner: object,
    table: Sequence[Route],
    request: HttpRequest,
    error: ErrorBody,
    failed: FailureHook | None = None,
) -> HttpResponse:
    """Route a request through ``table`` (first match wins; HEAD is served as GET).

    A handler's exception becomes ``error(exc, model)``'s answer (and, on a counted route,
    goes to ``failed`` first); a path that matches only with another method is 405, anything
    else 404, both in Triton's ``{"error"}`` form.
    """
    route, params, allowed = match_route(table, request.method, request.path)
    if route is not None:
        try:
            return await route.handler(owner, request, params)
        except Exception as exc:
            if failed is not None and route.counted:
                failed(params.get("model"), exc)
            status, body = error(exc, params.get("model"))
            return HttpResponse(status, body)
    if allowed:
        return HttpResponse(405, b'{"error":"Method Not Allowed"}')
    return HttpResponse(404, b'{"error":"Not Found"}')
