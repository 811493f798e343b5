"""uvicorn's httptools protocol with modelyard's request limits and drain (``--http-server
uvicorn``).

uvicorn's httptools front end has no limit on the request line or headers (only its h11
one has ``h11_max_incomplete_event_size``, and no header timeout), and its graceful
shutdown closes idle keep-alive connections at once, racing clients that are sending on
them. This subclass gives it what modelyard's own front end (``_server.py``) does, with
the same flags and answers: 414 over ``--http-max-url-size``, 431 over
``--http-max-header-size`` (both counted while the bytes arrive, since httptools hands a
header over only once whole, after re-copying it at each chunk), 408 after
``--http-header-timeout``, and a drain that answers the requests it has been sent and
closes a keep-alive connection only between requests, with nothing unread, after a
moment's quiet.

:class:`UvicornFrontEnd` runs one uvicorn server (the HTTP port, or SageMaker's container
face with ``--allow-sagemaker``) as a front end of ``server.lifecycle``: the lifecycle,
not uvicorn, takes the signals and loads the models, so both ports drain at once and are
done before the models unload.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from modelyard.errors import ModelyardError, PortUnavailable, RequestTimeout, UriTooLong
from modelyard.protocol._server import DRAIN_QUIET_SECS, headers_too_large, unread_bytes
from modelyard.protocol.errors import v2_error
from modelyard.settings import ServerSettings

if TYPE_CHECKING:
    from modelyard.protocol.app import ModelyardApp

log = logging.getLogger("modelyard.server")


def bounded_protocol(settings: ServerSettings) -> type[HttpToolsProtocol]:
    """uvicorn's ``http=`` protocol class, holding ``settings``' limits."""

    class _Bounded(BoundedHttpToolsProtocol):
        max_url = settings.max_url_size
        max_head = settings.max_header_size
        header_timeout = settings.header_timeout

    return _Bounded


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_url: int
    max_head: int
    header_timeout: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_head = False
        self.in_body = False
        self.head_size = 0
        self.header_bytes = 0
        self.begun = 0
        self.discarding = False
        self.draining = False
        self.last_active = time.monotonic()
        self.refused: ModelyardError | None = None
        self.head_timer: asyncio.TimerHandle | None = None
        # during a drain: the request whose response closes the connection, and whether
        # its client wanted the connection kept (restored if one arrives behind it)
        self.drain_last: tuple[RequestResponseCycle, bool] | None = None

    # -- counting the head as it arrives ----------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.discarding:
            return
        between = not self.in_head and not self.in_body
        begun = self.begun
        super().data_received(data)  # a refusal raised in a callback comes back as a 400
        if self.discarding or self.transport.is_closing() or not self.in_head:
            return
        if self.begun == begun:
            self.head_size += len(data)
        elif between and self.begun == begun + 1:
            self.head_size = len(data)
        if self.head_size > self.max_head:
            self.refuse(headers_too_large(self.max_head))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.begun += 1
        self.in_head, self.in_body = True, False
        self.head_size = self.header_bytes = 0
        if self.header_timeout:
            self.head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.max_url:
            self.refused = UriTooLong(
                f"the request target exceeds the maximum allowed value of {self.max_url} "
                "bytes. Use --http-max-url-size to increase the limit."
            )
            raise self.refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self.in_head, self.in_body = False, True
        if len(self.url) + self.header_bytes + 16 > self.max_head:
            self.refused = headers_too_large(self.max_head)
            raise self.refused
        previous = self.cycle
        super().on_headers_complete()
        if self.draining and self.cycle is not None and self.cycle is not previous:
            # arrived during the drain: answered, then closed; the request before it (still
            # being answered, this one pipelined behind it) keeps the connection open again
            self._close_after(self.cycle)

    def on_message_complete(self) -> None:
        self.in_head = self.in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.last_active = time.monotonic()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        if self.refused is not None:  # our own refusal, raised in a parser callback
            self.refuse(self.refused)
        else:
            super().send_400_response(msg)

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.in_head and not self.discarding and not self.transport.is_closing():
            self.refuse(
                RequestTimeout(
                    "the request headers did not arrive within "
                    f"{self.header_timeout:g} seconds (--http-header-timeout)"
                )
            )

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def refuse(self, exc: ModelyardError) -> None:
        """Answer in v2's error form with ``Connection: close``, then stop reading: half-close
        and close a moment later, so the answer is not lost to a reset while the client is
        still sending."""
        self._stop_head_timer()
        self.refused = None
        self.discarding = True
        self.in_head = self.in_body = False
        status, body = v2_error(exc)
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(2.0, self.transport.close)
        else:
            self.transport.close()

    # -- drain ------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """uvicorn's graceful shutdown, minus its race: a connection with no request in
        flight is closed only once quiet, with no request arriving or unread."""
        self.draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            # the last request received closes the connection (uvicorn's ``cycle`` is the
            # newest, pipelined ones included)
            self._close_after(self.cycle)
            return
        self._close_when_quiet()

    def _close_after(self, cycle: RequestResponseCycle) -> None:
        """``cycle``'s response is the connection's last (``Connection: close``)."""
        marked = self.drain_last
        if marked is not None and marked[0] is not cycle and not marked[0].response_complete:
            marked[0].keep_alive = marked[1]  # a request came in behind it after all
        self.drain_last = (cycle, cycle.keep_alive)
        cycle.keep_alive = False

    def _close_when_quiet(self) -> None:
        if self.transport.is_closing():
            return
        idle = (self.cycle is None or self.cycle.response_complete) and not (
            self.in_head or self.in_body
        )
        if (
            idle
            and self.last_active < time.monotonic() - DRAIN_QUIET_SECS
            and not unread_bytes(self.transport)
        ):
            self.transport.close()
        else:
            self.loop.call_later(0.05, self._close_when_quiet)


def uvicorn_front_ends(app: ModelyardApp) -> list[UvicornFrontEnd]:
    """The HTTP port, and SageMaker's container face on its own port when it is on (the
    metrics port is the HTTP port's ``/metrics`` under uvicorn)."""
    settings = app.settings
    ends = []
    if settings.allow_sagemaker:
        ends.append(
            UvicornFrontEnd(
                app.sagemaker_asgi, settings, settings.sagemaker_port, "--sagemaker-port"
            )
        )
    ends.append(UvicornFrontEnd(app, settings, settings.http_port, "--http-port"))
    return ends


class UvicornFrontEnd:
    """One uvicorn server on one port, as a ``server.lifecycle`` front end."""

    def __init__(self, app: Any, settings: ServerSettings, port: int, flag: str) -> None:
        self.settings = settings
        self.port = port
        self.flag = flag
        self.config = uvicorn.Config(
            app,
            host=settings.http_address,
            port=port,
            lifespan="off",  # the lifecycle loads and unloads the models
            interface="asgi3",  # a bound method (the container face): uvicorn would guess 2
            http=bounded_protocol(settings),  # httptools, with modelyard's limits and drain
            access_log=False,
            log_level="debug" if settings.log_verbose else "info",
            timeout_graceful_shutdown=int(max(1, settings.exit_timeout_secs)),
            timeout_keep_alive=75,
            backlog=4096,
        )
        self.server = uvicorn.Server(self.config)
        self.socket: socket.socket | None = None
        self.ticks: asyncio.Task[None] | None = None
        self.finished = True

    async def start(self) -> None:
        address = self.settings.http_address
        try:
            self.socket = socket.create_server(
                (address, self.port),
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                backlog=4096,
            )
        except OSError as exc:
            raise PortUnavailable(
                address, self.port, self.flag, os.strerror(exc.errno or 0)
            ) from None
        self.config.load()
        self.server.lifespan = self.config.lifespan_class(self.config)
        await self.server.startup(sockets=[self.socket])
        # uvicorn's once-a-second tick (the Date header) until the drain
        self.ticks = asyncio.create_task(self.server.main_loop())
        log.info("Started HTTPService (uvicorn) at %s:%d", address, self.port)

    async def drain(self, grace: float) -> None:
        """uvicorn's graceful shutdown (``BoundedHttpToolsProtocol.shutdown`` per
        connection), cancelling what is still running after the exit timeout."""
        self.server.should_exit = True
        if self.ticks is not None:
            await self.ticks
        if self.server.started:
            self.config.timeout_graceful_shutdown = int(max(1, grace))
            sockets = [self.socket] if self.socket is not None else None
            await self.server.shutdown(sockets=sockets)
            self.finished = not self.server.server_state.tasks

    async def stop(self) -> bool:
        return self.finished
