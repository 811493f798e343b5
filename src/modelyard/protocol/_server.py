"""modelyard's HTTP/1.1 front end: httptools' parser on uvloop, one write per response.

Why not an ASGI server: on the inference path the server's own work is a few tens of
microseconds, and uvicorn's per-request machinery (ASGI message dicts, header validation,
two socket writes per response) cost as much again (figures in docs/architecture.md). This
front end hands each complete request to ``ModelyardApp.handle`` and writes the whole
response with one ``transport.write``. The application stays an ASGI app as well, so any
ASGI server can still run it (``--http-server uvicorn``).

What it does, and only that: HTTP/1.1 and 1.0, keep-alive, pipelined requests answered in
order, ``Expect: 100-continue``, the body size cap enforced while the body arrives, write
back-pressure (reading pauses while the socket's buffer is full), idle keep-alive timeout,
limits on the request line, headers and header time (414, 431, 408: counted as the bytes
arrive, so a hostile client costs next to nothing), and a graceful drain that answers every
request it has received (stop accepting, ``Connection: close`` on each connection's last
response, close keep-alive connections only between requests; see ``HttpFrontEnd._drain``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools

from modelyard.errors import (
    HeadersTooLarge,
    ModelyardError,
    PortUnavailable,
    RequestTimeout,
    UriTooLong,
)
from modelyard.protocol._http import HttpRequest, HttpResponse, too_large
from modelyard.protocol.app import ModelyardApp
from modelyard.protocol.errors import v2_error

try:  # how many received bytes a socket holds unread (Linux, macOS, the BSDs)
    import fcntl
    import termios

    _FIONREAD: int | None = termios.FIONREAD
except ImportError:  # Windows: the drain cannot look, and closes idle connections as before
    _FIONREAD = None

log = logging.getLogger("modelyard.http")

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
Listener = tuple[str, int, Handler]  # (address, port, handler): a further port to serve

# a keep-alive connection must be this quiet before the drain closes it (see _drain)
DRAIN_QUIET_SECS = 0.5

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()


class _Connection(asyncio.Protocol):
    """One client connection; requests are answered strictly in arrival order."""

    def __init__(self, front: HttpFrontEnd, handler: Handler | None = None) -> None:
        self.front = front
        self.app = front.app
        self.handler = handler or front.app.handle
        self.limit = front.app.settings.max_input_size
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: collections.deque[tuple[HttpRequest | HttpResponse, bool]] = (
            collections.deque()
        )
        self.busy = False
        self.closing = False
        self._upgraded = False  # CONNECT or Upgrade: answer what came, then close
        self.last_active = time.monotonic()
        # the request being parsed
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._discarding = False  # refused a request (oversize, upgrade): ignore what follows
        # where the connection stands in the request now arriving: its head (request line
        # and headers, with the bytes counted so far and when its first byte came) or its
        # body; neither between requests. The drain closes a connection only between them.
        settings = front.app.settings
        self.max_url = settings.max_url_size
        self.max_head = settings.max_header_size
        self.in_head = False
        self.in_body = False
        self.head_size = 0
        self._header_bytes = 0  # the current request's headers, as httptools hands them over
        self.head_since = 0.0
        self._begun = 0  # requests begun on this connection: tells a chunk that starts one
        self._refused: ModelyardError | None = None  # raised in a parser callback

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        self.closing = True
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._discarding:
            return
        # between requests, a chunk begins with the next request's head
        between = not self.in_head and not self.in_body
        begun = self._begun
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._refused is None:
                raise
            self._refuse(self._refused)
            return
        except httptools.HttpParserUpgrade:
            # CONNECT, or a request asking to switch protocols: the request itself is
            # answered (405 for CONNECT, as an HTTP/1.1 request otherwise), then the
            # connection closes, since what follows on it is not HTTP/1.1
            self._discarding = self._upgraded = True
            if self.idle():
                self.close()
            return
        except httptools.HttpParserError as exc:
            self._fail(400, b'{"error":"malformed HTTP request: ' + _ascii(exc) + b'"}')
            return
        if self.in_head:
            # The head's bytes are counted as they arrive, not as httptools hands them over:
            # it hands a header over only once whole, after re-copying it at each chunk. A
            # chunk that ends inside a head is all head when that head was already arriving,
            # or when the chunk started it from between requests; one that also finished an
            # earlier request counts from the next chunk on (at most one read's worth more).
            if self._begun == begun:
                self.head_size += len(data)
            elif between and self._begun == begun + 1:
                self.head_size = len(data)
            if self.head_size > self.max_head:
                self._refuse(headers_too_large(self.max_head))

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._too_large = False
        self._begun += 1
        self.in_head, self.in_body = True, False
        self.head_size = self._header_bytes = 0
        self.head_since = self.last_active  # when the chunk holding its first byte came

    def on_url(self, url: bytes) -> None:
        if len(self._url) + len(url) > self.max_url:
            # stop here, before buffering more: the parser passes the exception back
            self._refused = UriTooLong(
                f"the request target exceeds the maximum allowed value of {self.max_url} "
                "bytes. Use --http-max-url-size to increase the limit."
            )
            raise self._refused
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self.in_head, self.in_body = False, True
        # a head that came whole in one chunk is measured here ("GET " ... " HTTP/1.1\r\n")
        if len(self._url) + self._header_bytes + 16 > self.max_head:
            self._refused = headers_too_large(self.max_head)
            raise self._refused
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            # answer now rather than after receiving a body we will not keep
            self._discarding = True
            self.pending.append((self._too_large_response(), False))
            if not self.busy:
                self._next()
        elif self._refused_before_body(length):
            pass
        elif (
            self._headers.get(b"expect", b"").lower() == b"100-continue"
            and self.transport is not None
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _refused_before_body(self, length: bytes | None) -> bool:
        """A request with a body that the access gate refuses is answered now, and the
        connection closed after the answer: an unauthenticated client cannot make the
        server take in (or ``100 Continue``) a body it will not serve. Requests without a
        body go the usual way, which keeps their connection open."""
        if not self.app.access.enabled:
            return False
        if (length is None or length == b"0") and b"transfer-encoding" not in self._headers:
            return False
        path = unquote(self._url.split(b"?", 1)[0].decode("latin-1"))
        refused = self.app.refusal(self.handler, path, self._headers)
        if refused is None:
            return False
        self._discarding = True
        self.in_body = False
        self.pending.append((refused, False))
        if not self.busy:
            self._next()
        return True

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._size += len(body)
        if self._size > self.limit:
            self._too_large = True
            self._body = []
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self.in_head = self.in_body = False
        # the client's wish; whether this response keeps the connection is decided when it
        # is written (a drain closes it after the last request received, not before)
        keep_alive = bool(self.parser.should_keep_alive())
        item: HttpRequest | HttpResponse
        if self._too_large:
            item, keep_alive = self._too_large_response(), False
        elif self.parser.get_method() == b"CONNECT":  # a proxy's tunnel: not served here
            item, keep_alive = HttpResponse(405, b'{"error":"Method Not Allowed"}'), False
        else:
            raw_path, _, query = self._url.partition(b"?")
            item = HttpRequest(
                self.parser.get_method().decode("ascii", "replace"),
                unquote(raw_path.decode("latin-1")),
                self._headers,
                self._body[0] if len(self._body) == 1 else b"".join(self._body),
                query,
            )
        self.pending.append((item, keep_alive))
        if not self.busy:
            self._next()

    def _too_large_response(self) -> HttpResponse:
        path = unquote(self._url.split(b"?", 1)[0].decode("latin-1"))
        return self.app.error_response(path, too_large(self.limit))

    # -- answering -------------------------------------------------------------------------
    def _next(self) -> None:
        if not self.pending or self.transport is None:
            self.busy = False
            if self._upgraded:
                self.close()
            return
        self.busy = True
        item, keep_alive = self.pending.popleft()
        if isinstance(item, HttpResponse):
            self._write(item, keep_alive, head=False)
            return
        task = asyncio.get_running_loop().create_task(self._answer(item, keep_alive))
        self.front.tasks.add(task)
        task.add_done_callback(self.front.tasks.discard)

    async def _answer(self, request: HttpRequest, keep_alive: bool) -> None:
        start = time.perf_counter()
        try:
            response = await self.handler(request)
        except Exception as exc:  # handle() maps errors itself; this is a last resort
            status, body = v2_error(exc)
            response = HttpResponse(status, body)
        if self.front.log_requests:  # --log-verbose: one line per request
            log.debug(
                "%s %s -> %d (%.2f ms)",
                request.method,
                request.path,
                response.status,
                (time.perf_counter() - start) * 1000,
            )
        self._write(response, self._keep_alive(keep_alive), request.method == "HEAD")

    def _keep_alive(self, wanted: bool) -> bool:
        """Whether the response now written leaves the connection open.

        During a drain the last request this connection has received gets ``Connection:
        close``; requests already queued behind it (pipelined) or arriving on it are still
        answered, so a request the server has read is never dropped with the connection.
        """
        if not wanted or self._upgraded:
            return False
        if self.front.draining:
            return bool(self.pending) or self.in_head or self.in_body
        return True

    def _write(self, response: HttpResponse, keep_alive: bool, head: bool) -> None:
        transport = self.transport
        if transport is None:
            if response.stream is not None:
                self._discard_stream(response.stream)
            return
        if response.stream is not None and not head:
            self._write_stream(response, keep_alive)
            return
        length = b"content-length: %d\r\n" % len(response.body)
        parts = _head(response, length, keep_alive)
        if not head:
            parts.append(response.body)
        transport.write(b"".join(parts))
        self._answered(keep_alive)

    def _answered(self, keep_alive: bool) -> None:
        """A response is out: on to the next pipelined request, or close."""
        self.last_active = time.monotonic()
        if keep_alive:
            self._next()
        else:
            self.pending.clear()
            self.close()

    def _write_stream(self, response: HttpResponse, keep_alive: bool) -> None:
        """Headers now, then each chunk as the model produces it (chunked coding)."""
        assert self.transport is not None and response.stream is not None
        parts = _head(response, b"transfer-encoding: chunked\r\n", keep_alive)
        if response.body:
            parts += [b"%x\r\n" % len(response.body), response.body, b"\r\n"]
        self.transport.write(b"".join(parts))
        task = asyncio.get_running_loop().create_task(self._pump(response.stream, keep_alive))
        self.front.tasks.add(task)
        task.add_done_callback(self.front.tasks.discard)

    async def _pump(self, stream: AsyncIterator[bytes], keep_alive: bool) -> None:
        try:
            async for chunk in stream:
                if self.transport is None or self.transport.is_closing():
                    return  # the client left: closing the stream cancels the model's work
                if chunk:
                    self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        except Exception:  # the handler turns model errors into events; this is a bug
            log.exception("streamed response failed")
            keep_alive = False
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if self.transport is None:
            return
        self.transport.write(b"0\r\n\r\n")
        self._answered(keep_alive)

    def _discard_stream(self, stream: AsyncIterator[bytes]) -> None:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            task = asyncio.get_running_loop().create_task(aclose())
            self.front.tasks.add(task)
            task.add_done_callback(self.front.tasks.discard)

    def _fail(self, status: int, body: bytes) -> None:
        """Malformed input: requests received before it are still answered, then this."""
        self._discarding = True
        self.in_head = self.in_body = False
        self.pending.append((HttpResponse(status, body), False))
        if not self.busy:
            self._next()

    def close(self) -> None:
        self.closing = True
        transport = self.transport
        if transport is None:
            return
        if self._discarding and transport.can_write_eof():
            # the client is still sending a body we refused: closing now would reset the
            # connection and could destroy our answer before it is read, so half-close,
            # keep discarding, and close for good a moment later
            transport.write_eof()
            asyncio.get_running_loop().call_later(2.0, transport.close)
            return
        transport.close()

    def idle(self) -> bool:
        """No request being answered, queued, or arriving."""
        return not self.busy and not self.pending and not self.in_head and not self.in_body

    def unread(self) -> bool:
        return self.transport is not None and unread_bytes(self.transport)

    def _refuse(self, exc: ModelyardError) -> None:
        """Answer a request refused while its head arrives (414, 431, 408), after any the
        connection is still answering, then close; what the client still sends is ignored."""
        self._refused = None
        self._discarding = True
        self.in_head = self.in_body = False
        self.pending.append((HttpResponse(*v2_error(exc)), False))
        if not self.busy:
            self._next()

    def check_head_timeout(self, cutoff: float) -> None:
        """The sweeper's slowloris check: a head begun before ``cutoff`` and still arriving."""
        if self.in_head and self.head_since < cutoff and not self._discarding:
            self._refuse(
                RequestTimeout(
                    "the request headers did not arrive within "
                    f"{self.front.app.settings.header_timeout:g} seconds "
                    "(--http-header-timeout)"
                )
            )


def _head(response: HttpResponse, framing: bytes, keep_alive: bool) -> list[bytes]:
    """Status line and headers; ``framing`` is the content-length or chunked line."""
    parts = [_status_line(response.status), b"content-type: ", response.content_type, b"\r\n"]
    parts.append(framing)
    for name, value in response.headers:
        parts += [name, b": ", value, b"\r\n"]
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return parts


def unread_bytes(transport: asyncio.BaseTransport) -> bool:
    """Bytes the client sent that the event loop has not read yet (a request it sent on a
    keep-alive connection just now): closing the connection now would lose that request."""
    if _FIONREAD is None:
        return False
    sock = transport.get_extra_info("socket")
    try:
        raw = fcntl.ioctl(sock.fileno(), _FIONREAD, b"\0\0\0\0")
    except (OSError, AttributeError, ValueError):
        return False
    return int.from_bytes(raw, sys.byteorder) > 0


def headers_too_large(limit: int) -> HeadersTooLarge:
    return HeadersTooLarge(
        f"the request line and headers exceed the maximum allowed value of {limit} bytes. "
        "Use --http-max-header-size to increase the limit."
    )


def _ascii(exc: Exception) -> bytes:
    return str(exc).encode("ascii", "replace").replace(b'"', b"'")


class HttpFrontEnd:
    """Every HTTP port of the server (the main one, metrics, SageMaker's container face):
    a front end for ``server.lifecycle`` (``start``, ``drain``, ``stop``)."""

    def __init__(
        self,
        app: ModelyardApp,
        keep_alive_timeout: float = 75.0,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self.app = app
        self.listeners = listeners
        self.log_requests = log.isEnabledFor(
            logging.DEBUG
        )  # further ports, each with its own handler (SageMaker's)
        self.keep_alive_timeout = keep_alive_timeout
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.draining = False
        self.server: asyncio.Server | None = None  # the main port's, once started
        self.extra: list[asyncio.Server] = []  # the further ports'
        self.sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind the further ports, then the main one (its "Started" line is what scripts
        wait for); the models are loaded already (``server.lifecycle``)."""
        settings = self.app.settings
        loop = asyncio.get_running_loop()
        for address, port, handler in self.listeners:  # before the main port reports ready
            self.extra.append(
                await _bind(
                    loop,
                    functools.partial(_Connection, self, handler),
                    address,
                    port,
                    "--metrics-port" if port == settings.metrics_port else "--sagemaker-port",
                )
            )
            log.info("Started HTTPService at %s:%d", address, port)
        self.server = await _bind(
            loop,
            lambda: _Connection(self),
            settings.http_address,
            settings.http_port,
            "--http-port",
        )
        log.info("Started HTTPService at %s:%d", settings.http_address, settings.http_port)
        self.sweeper = loop.create_task(self._sweep_idle())

    async def drain(self, grace: float) -> None:
        """Stop accepting on every port and finish the requests received (``_drain``)."""
        if self.sweeper is not None:
            self.sweeper.cancel()
        for listener in self.extra:
            listener.close()
        if self.server is not None:
            await self._drain(self.server, grace)

    async def stop(self) -> bool:
        """True when no request is still running (the models are unloaded by now)."""
        return not self.tasks

    async def _drain(self, server: asyncio.Server, grace: float) -> None:
        """Readiness false, stop accepting, finish in-flight work, then close.

        No request the server has received is lost: each connection's last response carries
        ``Connection: close``, and a keep-alive connection is closed only between requests,
        with nothing unread, and after a moment's quiet. Closing one the moment the drain
        starts would race its client, which may be sending its next request on it right
        then and would see "connection closed without response"; a busy client instead gets
        its next answer with ``Connection: close`` and reconnects (to a closed listener).
        """
        self.draining = True  # the data plane's readiness is false already (server.lifecycle)
        server.close()
        header_timeout = self.app.settings.header_timeout
        deadline = time.monotonic() + grace
        while (self.tasks or self.connections) and time.monotonic() < deadline:
            now = time.monotonic()
            for conn in list(self.connections):
                if header_timeout:  # a slowloris does not hold the drain either
                    conn.check_head_timeout(now - header_timeout)
                if conn.idle() and conn.last_active < now - DRAIN_QUIET_SECS and not conn.unread():
                    conn.close()
            await asyncio.sleep(0.01)
        if self.tasks or self.connections:
            log.warning(
                "exit timeout: %d requests still running, %d connections open",
                len(self.tasks),
                len(self.connections),
            )
        for conn in list(self.connections):
            conn.close()

    async def _sweep_idle(self) -> None:
        """Close keep-alive connections idle for longer than the timeout, and connections
        whose request headers take longer than ``--http-header-timeout`` (slowloris)."""
        header_timeout = self.app.settings.header_timeout
        period = min(10.0, self.keep_alive_timeout, header_timeout or 10.0) / 2
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            cutoff = now - self.keep_alive_timeout
            for conn in list(self.connections):
                if header_timeout:
                    conn.check_head_timeout(now - header_timeout)
                # no bytes for that long: between requests, or a stalled upload (unless a
                # request came just now and is waiting to be read)
                if (
                    not conn.busy
                    and not conn.pending
                    and conn.last_active < cutoff
                    and not conn.unread()
                ):
                    conn.close()


async def _bind(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    address: str,
    port: int,
    flag: str,
) -> asyncio.Server:
    """A listening socket, or a one-line error a user can act on (not asyncio's traceback)."""
    try:
        return await loop.create_server(factory, address, port, backlog=4096, reuse_address=True)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise PortUnavailable(address, port, flag, reason) from None
