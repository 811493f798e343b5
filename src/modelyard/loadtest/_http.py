"""The load generator's HTTP/1.1 client: keep-alive connections, one request in flight on each.

Open-loop load needs many requests in flight from one thread at a small, steady CPU cost per
request, which a blocking client (``deploy/_client.py``, one connection) cannot give and a
general async client (httpx: ~150 µs of CPU a request in pure Python) would spend on itself.
So the hot path is an ``asyncio.Protocol`` per connection with httptools (llhttp, the C parser
uvicorn uses, already a dependency) reading the answers: requests are prebuilt bytes
(:func:`raw_request`), a connection is opened when none is idle (up to ``max_connections``;
beyond that calls wait in order, and that wait shows as the call's send lag), and every call
ends in ``on_done(call)`` with its status or error and its monotonic timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

from modelyard.errors import InvalidArgument

__all__ = ["Call", "Pool", "Target", "raw_request"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where the load goes: ``http(s)://host:port[/prefix]``."""

    scheme: str
    host: str
    port: int
    prefix: str  # a path prefix a router serves the server under, without the trailing "/"

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"--url {url!r}: expected http(s)://host[:port][/prefix]")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidArgument(f"--url {url!r}: the port is not a number") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.prefix}"


def raw_request(
    target: Target, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """A whole HTTP/1.1 request as bytes, sent verbatim each time it is used."""
    lines = [f"{method} {target.prefix}{path} HTTP/1.1", f"Host: {target.authority}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Call:
    """One request: what to send, and what became of it (times from ``time.perf_counter``)."""

    __slots__ = ("body", "done", "error", "headers", "key", "raw", "scheduled", "sent", "status",
                 "submitted")  # fmt: skip

    def __init__(self, raw: bytes, scheduled: float, key: int = 0) -> None:
        self.raw = raw
        self.scheduled = scheduled  # when it was meant to go (open loop) or was asked for
        self.key = key  # the caller's tag (the model's index in the mix)
        self.submitted = scheduled  # when the caller handed it over (later: the client lagged)
        self.sent = 0.0  # when its bytes were written (later still: it waited for a connection)
        self.done = 0.0
        self.status = 0  # the HTTP status; 0 when no answer came (see ``error``)
        self.error = ""
        self.body = b""
        self.headers: dict[str, str] = {}


Done = Callable[[Call], None]


class _Conn(asyncio.Protocol):
    """The lean connection of the load: status and error bodies only (httptools calls back
    only the callbacks a protocol defines, so this one has no ``on_header``)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.call: Call | None = None
        self.on_done: Done | None = None
        self.chunks: list[bytes] = []

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._finish(f"bad HTTP response: {err}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool._lost(self)
        if self.call is not None:
            self._finish(f"connection closed by the server: {exc or 'EOF'}")

    # -- httptools callbacks ---------------------------------------------------------------
    def on_body(self, body: bytes) -> None:
        if self.parser.get_status_code() >= 400:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        call = self.call
        if call is None:
            return
        call.status = self.parser.get_status_code()
        if self.chunks:
            call.body = b"".join(self.chunks)
        keep = self.parser.should_keep_alive()
        self._finish("")
        if keep and self.transport is not None:
            self.pool._idle(self)
        else:
            self.close()

    # -- ours ------------------------------------------------------------------------------
    def send(self, call: Call, on_done: Done) -> None:
        assert self.transport is not None
        self.call, self.on_done = call, on_done
        if self.chunks:
            self.chunks = []
        call.sent = time.perf_counter()
        self.transport.write(call.raw)

    def expire(self, now: float) -> None:
        """Fail the call in flight if it is past the timeout (the pool's sweep asks)."""
        call = self.call
        if call is not None and now - call.sent >= self.pool.timeout:
            self._finish(f"no answer within {self.pool.timeout:g} s (--timeout)")
            self.close()  # the late answer must not be read as the next call's

    def _finish(self, error: str) -> None:
        call, on_done = self.call, self.on_done
        self.call = self.on_done = None
        if call is None or on_done is None:
            return
        call.done = time.perf_counter()
        call.error = error
        on_done(call)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _FullConn(_Conn):
    """Setup calls and first requests: every answer's headers and body."""

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.call is not None:
            self.call.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)


class Pool:
    """Keep-alive connections to one target; ``submit`` never blocks.

    Timeouts are swept, not timed per call (a timer a request costs as much CPU as the rest
    of the call's bookkeeping): a call fails within a tenth of ``timeout`` (at most 0.1 s)
    after it is due.
    """

    def __init__(
        self,
        target: Target,
        *,
        max_connections: int = 256,
        timeout: float = 30.0,
        full: bool = False,
        verify_tls: bool = True,
    ) -> None:
        self.target = target
        self.max_connections = max_connections
        self.timeout = timeout
        self._factory = _FullConn if full else _Conn
        self.loop = asyncio.get_running_loop()
        self._ssl: ssl.SSLContext | None = None
        if target.scheme == "https":
            self._ssl = ssl.create_default_context()
            if not verify_tls:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._idle_conns: deque[_Conn] = deque()
        self._waiting: deque[tuple[Call, Done]] = deque()
        self._conns: set[_Conn] = set()
        self._opening = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self.peak_connections = 0

    @property
    def waiting(self) -> int:
        """Calls queued for a connection (the pool is at ``max_connections``)."""
        return len(self._waiting)

    def submit(self, call: Call, on_done: Done) -> None:
        if self._idle_conns:
            self._idle_conns.pop().send(call, on_done)
            return
        self._waiting.append((call, on_done))
        if len(self._conns) + self._opening < self.max_connections:
            self._open()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Call:
        """One call, awaited, with the answer's body and headers (setup calls)."""
        return await self.call(raw_request(self.target, method, path, body, headers))

    async def call(self, raw: bytes) -> Call:
        """One prebuilt request, awaited (headers and body kept by a ``full`` pool)."""
        future: asyncio.Future[Call] = self.loop.create_future()
        call = Call(raw, time.perf_counter())
        self.submit(call, lambda c: None if future.done() else future.set_result(c))
        return await future

    async def warm(self, n: int) -> None:
        """Open connections until ``n`` are idle (or the cap), before a step is measured."""
        want = min(n, self.max_connections) - len(self._conns) - self._opening
        if want > 0:
            self._opening += want
            await asyncio.gather(*(self._connect() for _ in range(want)), return_exceptions=True)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._conns):
            conn.close()

    def _sweep(self) -> None:
        now = time.perf_counter()
        for conn in list(self._conns):
            conn.expire(now)
        self._sweeper = self.loop.call_later(min(0.1, self.timeout / 10), self._sweep)

    # -- connections -----------------------------------------------------------------------
    def _open(self) -> None:
        self._opening += 1
        task = self.loop.create_task(self._connect())
        task.add_done_callback(_retrieve)

    async def _connect(self) -> None:
        # the caller counted this connection in self._opening
        try:
            _, conn = await self.loop.create_connection(
                lambda: self._factory(self),
                self.target.host,
                self.target.port,
                ssl=self._ssl,
                server_hostname=self.target.host if self._ssl else None,
            )
        except (OSError, ssl.SSLError) as err:
            self._opening = max(0, self._opening - 1)
            if self._waiting:  # the call that asked for this connection fails, not all
                call, on_done = self._waiting.popleft()
                call.sent = call.done = time.perf_counter()
                call.error = f"cannot connect to {self.target}: {_reason(err)}"
                on_done(call)
            if self._waiting and not self._conns and not self._opening:
                self._open()
            return
        self._opening = max(0, self._opening - 1)
        self._conns.add(conn)
        if self._sweeper is None:
            self._sweep()
        self.peak_connections = max(self.peak_connections, len(self._conns))
        self._idle(conn)

    def _idle(self, conn: _Conn) -> None:
        if self._waiting:
            conn.send(*self._waiting.popleft())
        else:
            self._idle_conns.append(conn)

    def _lost(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle_conns.remove(conn)
        if self._waiting and len(self._conns) + self._opening < self.max_connections:
            self._open()


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno)  # asyncio's own text omits it ("Connect call failed")
    return str(err) or repr(err)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
