"""Every process a runtime starts dies with the server, however the server ends.

No single mechanism covers every way a server stops, so there are three:

* **At shutdown** (SIGTERM drain, an expired ``--exit-timeout-secs``, any exit that runs
  ``atexit``): every child still alive is killed with its whole process group. Each child
  leads its own group, so a model's own subprocesses go with its worker.
* **When the server is SIGKILLed or crashes** nothing in it runs any more: Linux's
  ``PR_SET_PDEATHSIG`` makes the kernel SIGKILL a child when its parent dies. Model workers
  set it themselves as they start (``modelyard_worker.__main__``); other commands (pip, uv,
  interpreter probes) are started through a few lines of launcher that set it, check the
  parent is still there, and exec the command.
* **Where there is no PDEATHSIG** (macOS), model workers watch their parent's pid and kill
  themselves when it changes.

PDEATHSIG fires when the *thread* that forked the child ends, not the process. Loading
threads come and go, so every child is forked from one long-lived spawner thread.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

_LINUX = sys.platform.startswith("linux")

_SPAWNER = ThreadPoolExecutor(1, thread_name_prefix="modelyard-spawn")
_LIVE: set[subprocess.Popen[bytes]] = set()
_LOCK = threading.Lock()

# argv: <server pid> <command...>; PR_SET_PDEATHSIG = 1, survives the exec
_LAUNCHER = (
    "import ctypes, os, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def spawn(
    command: Sequence[str], *, launcher: bool = False, **popen: Any
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` on the spawner thread, in a process group of its own, remembered
    until it has exited so that :func:`kill_all` can reach it.

    ``launcher``: start it through the PDEATHSIG launcher (for programs that do not set it
    themselves); model workers set it on their own and pass False.
    """
    argv = [str(part) for part in command]
    if launcher and _LINUX:
        argv = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), *argv]
    if os.name == "posix":
        popen.setdefault("process_group", 0)
    proc = _SPAWNER.submit(_popen, argv, popen).result()
    with _LOCK:
        for old in [p for p in _LIVE if p.returncode is not None]:
            _LIVE.discard(old)
        _LIVE.add(proc)
    return proc


def _popen(argv: list[str], popen: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, **popen)


def run(
    command: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run(capture_output=True)`` for helper commands (environment builds):
    through the launcher, and on a timeout (or any error here) the command's whole process
    group is killed, not only its first process."""
    proc = spawn(
        command,
        launcher=True,
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        kill_group(proc)
        with contextlib.suppress(Exception):
            proc.communicate(timeout=5)
        raise
    return subprocess.CompletedProcess(list(command), int(proc.returncode), out, err)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child and everything in its process group (while it is not yet reaped,
    its pid, and so its group id, cannot have been reused)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):  # AttributeError: Windows
        with contextlib.suppress(OSError):
            proc.kill()


def kill_all() -> int:
    """Kill every child still running, with its process group; returns how many."""
    with _LOCK:
        procs = list(_LIVE)
    killed = 0
    for proc in procs:
        if proc.poll() is None:
            kill_group(proc)
            killed += 1
    return killed


def live_pids() -> list[int]:
    """The children still running (for the shutdown log)."""
    with _LOCK:
        return [p.pid for p in _LIVE if p.poll() is None]


atexit.register(kill_all)
