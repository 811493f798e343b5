"""Helper commands (environment builds) never outlive the server or their own timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from modelyard.runtimes import children


def _pid_from(path: Path) -> int:
    deadline = time.monotonic() + 60
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, "the child never wrote its pid"
        time.sleep(0.05)
    return int(path.read_text())


def _gone(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    _, alive = psutil.wait_procs([proc], timeout=60)
    return all(p.status() == psutil.STATUS_ZOMBIE for p in alive)


def test_a_timed_out_command_is_killed_with_its_whole_process_group(tmp_path: Path) -> None:
    """pip starts build subprocesses of its own: a build that times out takes them along
    (killing only the first process left them running)."""
    pidfile = tmp_path / "grandchild"
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen(['sleep', '600'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        children.run([sys.executable, "-c", script], timeout=5)
    grandchild = _pid_from(pidfile)
    assert _gone(grandchild)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_launched_command_dies_when_the_server_is_sigkilled(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    server = (
        "import sys, time\n"
        "from modelyard.runtimes import children\n"
        "p = children.spawn(['sleep', '600'], launcher=True)\n"
        "open(sys.argv[1], 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, "-c", server, str(pidfile)], env=env)
    try:
        child = _pid_from(pidfile)
        assert psutil.Process(child).ppid() == parent.pid
        parent.kill()
        parent.wait(60)
        assert _gone(child)
    finally:
        if parent.poll() is None:
            parent.kill()
