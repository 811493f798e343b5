"""pytest plugin (loaded automatically once modelyard is installed): real servers in tests.

    def test_my_model(modelyard_server):
        server = modelyard_server("models/", "--log-verbose=1")
        client = tritonclient.http.InferenceServerClient(server.url)
        ...

Every server a test starts is stopped (SIGTERM, then SIGKILL) when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelyard.testing.server import RunningServer, start_server

StartServer = Callable[..., RunningServer]


@pytest.fixture
def modelyard_server() -> Iterator[StartServer]:
    """A function ``(repository, *flags, timeout=60.0, headers=None) -> RunningServer``.

    ``headers``: what the readiness poll must send (a restricted ``health`` group's header).
    """
    started: list[RunningServer] = []

    def start(
        model_repository: Path | str,
        *flags: str,
        timeout: float = 60.0,
        headers: dict[str, str] | None = None,
    ) -> RunningServer:
        server = start_server(model_repository, flags, timeout=timeout, headers=headers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
