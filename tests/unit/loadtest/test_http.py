"""The load generator's client against real sockets: keep-alive reuse, chunked answers, the
connection cap, and each way a call fails (timeout, closed, refused)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from modelyard.errors import InvalidArgument
from modelyard.loadtest._http import Call, Pool, Target, raw_request
from modelyard.testing.server import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive: every request gets 200 (chunked when the path says so), or 503 on /busy."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        path = head.split(b" ")[1]
        if path == b"/slow":
            await asyncio.sleep(0.05)
        if path == b"/chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            )
        elif path == b"/busy":
            writer.write(b'HTTP/1.1 503 Unavailable\r\nContent-Length: 16\r\n\r\n{"error":"busy"}')
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1 << 16)
    await asyncio.sleep(10)


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1 << 16)
    writer.close()


async def _with_server(
    handler: Handler, body: Callable[[Pool], Awaitable[None]], full: bool = True, **kw: float
) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(Target.from_url(f"http://127.0.0.1:{port}"), full=full, **kw)  # type: ignore[arg-type]
    try:
        await body(pool)
    finally:
        pool.close()
        server.close()


def test_keep_alive_chunked_and_error_bodies() -> None:
    async def body(pool: Pool) -> None:
        for _ in range(3):
            call = await pool.request("POST", "/infer", b"x" * 10)
            assert (call.status, call.body, call.error) == (200, b"ok", "")
        assert pool.peak_connections == 1  # one connection, reused
        chunked = await pool.request("GET", "/chunked")
        assert (chunked.status, chunked.body) == (200, b"abc")
        busy = await pool.request("GET", "/busy")
        assert (busy.status, busy.body) == (503, b'{"error":"busy"}')
        assert busy.sent <= busy.done

    asyncio.run(_with_server(_answer, body))

    async def lean(pool: Pool) -> None:  # the load's pool keeps error bodies only
        ok = await pool.request("POST", "/infer", b"x")
        busy = await pool.request("GET", "/busy")
        assert (ok.status, ok.body, busy.status, busy.body) == (200, b"", 503, b'{"error":"busy"}')

    asyncio.run(_with_server(_answer, lean, full=False))


def test_the_connection_cap_queues_calls_in_order() -> None:
    async def body(pool: Pool) -> None:
        done: list[Call] = []
        finished = asyncio.Event()
        loop = asyncio.get_running_loop()
        for i in range(6):
            call = Call(raw_request(pool.target, "GET", "/slow"), loop.time(), key=i)
            call.submitted = call.scheduled

            def on_done(c: Call) -> None:
                done.append(c)
                if len(done) == 6:
                    finished.set()

            pool.submit(call, on_done)
        assert pool.waiting == 6  # nothing was connected yet
        await asyncio.wait_for(finished.wait(), 10)
        assert all(c.status == 200 for c in done)
        assert pool.peak_connections == 2
        late = [c for c in done if c.key >= 2]
        assert all(c.sent > min(d.done for d in done) - 1e-3 for c in late)

    asyncio.run(_with_server(_answer, body, max_connections=2))


def test_a_call_without_answer_times_out() -> None:
    async def body(pool: Pool) -> None:
        call = await pool.request("GET", "/")
        assert call.status == 0 and call.error.startswith("no answer within 0.2 s")

    asyncio.run(_with_server(_silent, body, timeout=0.2))


def test_a_server_that_hangs_up() -> None:
    async def body(pool: Pool) -> None:
        call = await pool.request("GET", "/")
        assert call.error.startswith("connection closed by the server")

    asyncio.run(_with_server(_hang_up, body))


def test_nothing_listening() -> None:
    async def body() -> None:
        pool = Pool(Target.from_url(f"http://127.0.0.1:{free_port()}"))
        call = await pool.request("GET", "/")
        assert call.error.startswith("cannot connect to http://127.0.0.1:")
        assert "refused" in call.error.lower()

    asyncio.run(body())


def test_targets() -> None:
    t = Target.from_url("https://router.example:8443/models/")
    assert (t.scheme, t.host, t.port, t.prefix) == ("https", "router.example", 8443, "/models")
    assert str(Target.from_url("localhost:8000")) == "http://localhost:8000"
    assert Target.from_url("http://h").authority == "h"
    for bad in ("ftp://h", "http://", "http://h:port"):
        with pytest.raises(InvalidArgument, match="--url"):
            Target.from_url(bad)
