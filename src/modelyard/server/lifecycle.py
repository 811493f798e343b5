"""The server's life: load the models, start the front ends, serve until SIGTERM/SIGINT,
drain every front end at once within ``--exit-timeout-secs``, unload, exit.

A front end is anything with the three coroutines of :class:`FrontEnd` (modelyard's HTTP
front end, the uvicorn one, gRPC): the lifecycle knows nothing of their protocols, and
they know nothing of signals or of each other.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Sequence
from signal import SIGINT, SIGTERM
from typing import TYPE_CHECKING, Protocol

from modelyard.errors import ModelyardError

if TYPE_CHECKING:
    from modelyard.server.compose import Server
    from modelyard.settings import ServerSettings

log = logging.getLogger("modelyard.server")


class FrontEnd(Protocol):
    """One transport's listeners over the data plane. Its life, in order:

    1. ``start()``, once the models are loaded: bind its ports and begin serving; raise
       :class:`~modelyard.errors.PortUnavailable` (one line, naming the flag) when a port
       is taken. Front ends start one after another, in ``Server.front_ends`` order.
    2. ``drain(grace)``, on SIGTERM/SIGINT, after the data plane has turned readiness
       false: stop accepting, answer every request already received, close its
       connections; return within ``grace`` seconds (the front ends drain concurrently).
    3. ``stop()``, after the models are unloaded: release what is left; True when no
       request of this front end was still running (False makes the exit status 1, as
       Triton's when its exit timeout expires).
    """

    async def start(self) -> None: ...

    async def drain(self, grace: float) -> None: ...

    async def stop(self) -> bool: ...


async def serve(
    server: Server,
    front_ends: Sequence[FrontEnd],
    stop: asyncio.Event,
    *,
    freeze_heap: bool = True,
) -> bool:
    """Serve until ``stop`` is set; True when everything finished within the exit timeout."""
    await server.start()
    if freeze_heap:
        # modules, routes and startup models live for good: out of the collector's full
        # passes, which otherwise add milliseconds to the odd request under load
        gc.collect()
        gc.freeze()
    started: list[FrontEnd] = []
    try:
        for front_end in front_ends:
            await front_end.start()
            started.append(front_end)
    except BaseException:  # a port taken: what started closes, the models unload
        for front_end in started:
            await front_end.drain(0)
        await server.stop()
        raise
    grace = server.settings.exit_timeout_secs
    try:
        await stop.wait()
    finally:
        deadline = time.monotonic() + grace
        server.begin_drain()
        await asyncio.gather(*(f.drain(grace) for f in started))
        try:  # unloading waits for executions still running on worker threads
            await asyncio.wait_for(server.stop(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("exit timeout expired with model executions still running")
            return False
    finished = [await f.stop() for f in started]
    return all(finished)


def run(settings: ServerSettings, http_server: str = "modelyard") -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    from modelyard.server.compose import build_server

    logging.basicConfig(
        level=logging.DEBUG if settings.log_verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        server = build_server(settings)
        front_ends = server.front_ends(http_server)
    except ModelyardError as exc:  # a store that cannot be opened, a missing extra
        log.error("cannot start: %s", exc)
        return 1

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (SIGTERM, SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve(server, front_ends, stop)

    try:
        import uvloop
    except ImportError:  # Windows: the standard event loop
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        drained = runner(main())
    except ModelyardError as exc:  # a port taken, a store that cannot be listed, ...
        log.error("cannot start: %s", exc)
        return 1
    except Exception:
        log.exception("server failed")
        return 1
    if not drained:
        # --exit-timeout-secs is a promise: do not wait at exit for worker threads still
        # inside a model; exit 1, as Triton does when its exit timeout expires (os._exit
        # skips atexit: the children go first)
        from modelyard.runtimes import children

        children.kill_all()
        logging.shutdown()
        os._exit(1)
    return 0
