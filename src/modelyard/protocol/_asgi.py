"""Plain ASGI plumbing: bounded body reading, content encodings, responses.

The server speaks raw ASGI rather than going through a web framework because the inference
path is a few dozen microseconds of work and a framework's request/response objects would
double it (figures in docs/architecture.md). This module is all the HTTP the routes need.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from modelyard.errors import InvalidArgument, PayloadTooLarge, Unsupported

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"
OCTET = b"application/octet-stream"


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request JSON size of {size} bytes exceeds the maximum allowed value of {limit} "
        "bytes. Use --http-max-input-size to increase the limit."
        if size >= 0
        else f"request body exceeds the maximum allowed value of {limit} bytes. "
        "Use --http-max-input-size to increase the limit."
    )


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, decompressed, refusing to hold more than ``limit`` bytes.

    The limit applies to the decompressed size too, so a small gzip bomb is refused after
    ``limit`` bytes of output rather than filling memory.
    """
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(int(length), limit)
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidArgument("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        more = message.get("more_body", False)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = header(scope, b"content-encoding")
    if encoding and encoding not in (b"identity",):
        body = _decompress(body, encoding.strip().lower(), limit)
    return body


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    if encoding in (b"gzip", b"x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise Unsupported("Unsupported compression type")  # Triton's text and status (501)
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidArgument(
            f"failed to decompress request body ({encoding.decode()}): {exc}"
        ) from None
    if len(out) > limit or d.unconsumed_tail:
        raise _too_large(-1, limit)
    if not d.eof:
        raise InvalidArgument(
            f"failed to decompress request body ({encoding.decode()}): truncated data"
        )
    return out


def choose_encoding(scope: Scope) -> bytes | None:
    """gzip or deflate when the client's Accept-Encoding allows it (gzip preferred)."""
    accept = header(scope, b"accept-encoding")
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


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
