"""Test harness: a real modelyard server process on a free 127.0.0.1 port."""

from modelyard.testing.server import (
    RunningServer,
    ServerFailed,
    free_port,
    running_server,
    start_server,
)

__all__ = ["RunningServer", "ServerFailed", "free_port", "running_server", "start_server"]
