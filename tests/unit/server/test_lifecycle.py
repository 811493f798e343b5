"""The lifecycle's order, over a real server (manager, data plane, a model) and front ends
that note what the lifecycle asks of them: the order every front end (HTTP, gRPC) relies on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from modelyard.errors import PortUnavailable
from modelyard.server.compose import Server
from modelyard.server.lifecycle import FrontEnd, serve
from modelyard.settings import ServerSettings
from tests.factories.onnx_models import add_sub, write_model


class Noting:
    """A front end that serves nothing and notes each call, with what it saw then."""

    def __init__(self, name: str, server: Server, log: list[str], fail: bool = False) -> None:
        self.name, self.server, self.log, self.fail = name, server, log, fail
        self.started = asyncio.Event()

    def _note(self, what: str) -> None:
        loaded = bool(self.server.manager.index(ready_only=True))
        self.log.append(f"{self.name}.{what} ready={self.server.plane.ready()} loaded={loaded}")

    async def start(self) -> None:
        self._note("start")
        self.started.set()
        if self.fail:
            raise PortUnavailable("127.0.0.1", 1, "--test-port", "Address already in use")

    async def drain(self, grace: float) -> None:
        assert grace == self.server.settings.exit_timeout_secs or grace == 0
        self._note("drain")

    async def stop(self) -> bool:
        self._note("stop")
        return True


def _server(tmp_path: Path) -> Server:
    write_model(tmp_path / "repo", "add_sub", add_sub(), None)
    settings = ServerSettings(
        str(tmp_path / "repo"),
        model_control_mode="none",
        model_cache_dir=tmp_path / "cache",
        exit_timeout_secs=5.0,
    )
    return Server(settings)


def test_start_serve_drain_stop_in_order(tmp_path: Path) -> None:
    server = _server(tmp_path)
    log: list[str] = []
    http = Noting("http", server, log)
    ends: list[FrontEnd] = [Noting("grpc", server, log), http]

    async def main() -> bool:
        stop = asyncio.Event()
        serving = asyncio.create_task(serve(server, ends, stop, freeze_heap=False))
        await http.started.wait()
        log.append(f"serving ready={server.plane.ready()}")
        stop.set()
        return await serving

    assert asyncio.run(main()) is True
    assert log == [
        "grpc.start ready=True loaded=True",  # models first, then the ports, in order
        "http.start ready=True loaded=True",
        "serving ready=True",
        "grpc.drain ready=False loaded=True",  # readiness false before any drain
        "http.drain ready=False loaded=True",
        "grpc.stop ready=False loaded=False",  # after the models are unloaded
        "http.stop ready=False loaded=False",
    ]


def test_a_front_end_that_cannot_start_stops_the_others_and_the_models(tmp_path: Path) -> None:
    server = _server(tmp_path)
    log: list[str] = []
    ends: list[FrontEnd] = [Noting("grpc", server, log), Noting("http", server, log, fail=True)]

    with pytest.raises(PortUnavailable, match="--test-port"):
        asyncio.run(serve(server, ends, asyncio.Event(), freeze_heap=False))
    assert log == [
        "grpc.start ready=True loaded=True",
        "http.start ready=True loaded=True",
        "grpc.drain ready=True loaded=True",
    ]
    assert server.manager.index(ready_only=True) == []  # unloaded
