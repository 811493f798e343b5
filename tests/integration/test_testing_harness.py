"""modelyard.testing as users get it: the public names and the pytest plugin."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

import modelyard.testing
from modelyard.testing import ServerFailed, start_server
from tests.factories.onnx_models import add_sub, write_model


def test_public_names() -> None:
    assert sorted(modelyard.testing.__all__) == [
        "RunningServer",
        "ServerFailed",
        "free_port",
        "running_server",
        "start_server",
    ]


def test_plugin_fixture_starts_and_stops_servers(pytester: pytest.Pytester, tmp_path: Path) -> None:
    write_model(tmp_path, "add_sub", add_sub(), None)
    pid_file = tmp_path / "pid"
    pytester.makepyfile(f"""
        import tritonclient.http as httpclient

        def test_uses_a_real_server(modelyard_server):
            server = modelyard_server({str(tmp_path)!r})
            open({str(pid_file)!r}, "w").write(str(server.process.pid))
            assert httpclient.InferenceServerClient(server.url).is_model_ready("add_sub")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    pid = int(pid_file.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_start_server_fails_fast_with_the_servers_output(tmp_path: Path) -> None:
    with pytest.raises(ServerFailed) as info:
        start_server(tmp_path / "missing", timeout=30)
    assert "is not a folder" in str(info.value)
