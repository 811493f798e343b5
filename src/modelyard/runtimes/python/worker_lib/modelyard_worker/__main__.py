"""Entry point: ``python -m modelyard_worker --fd N [--arena-in FD --arena-out FD]``.

The server starts this with the model environment's interpreter and ``PYTHONPATH`` naming
only the folder that holds this package and ``triton_python_backend_utils``.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import mmap
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from modelyard_worker import _state
from modelyard_worker._wire import Arena, FrameReader, Outgoing
from modelyard_worker._worker import Worker, import_model, is_async_model


def _arena(fd: int, threshold: int) -> Arena | None:
    if fd < 0:
        return None
    size = os.fstat(fd).st_size
    return Arena(mmap.mmap(fd, size), threshold)


def _first_frame(sock: socket.socket) -> dict[str, Any]:
    reader = FrameReader()
    while True:
        data = sock.recv(1 << 16)
        if not data:
            sys.exit(0)
        frames = reader.feed(data)
        if frames:
            return frames[0][0]


def die_with_parent(parent: int) -> None:
    """This process must not outlive the server, even one killed with SIGKILL (then nothing
    in the server runs to stop us): on Linux the kernel sends SIGKILL when the parent dies
    (PR_SET_PDEATHSIG); elsewhere, and as a second line, a thread watches the parent pid."""
    if parent <= 0:
        return
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
            pass
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent,), name="modelyard-parent-watch", daemon=True
    ).start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            # SIGKILL, not exit: the main thread may be stuck inside the model
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="modelyard_worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--arena-in", type=int, default=-1)
    parser.add_argument("--arena-out", type=int, default=-1)
    parser.add_argument("--arena-threshold", type=int, default=64 * 1024)
    parser.add_argument("--instance", default="")  # shown by ps; the init frame is authoritative
    parser.add_argument("--parent-pid", type=int, default=0)
    opts = parser.parse_args(argv)
    die_with_parent(opts.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    sock = socket.socket(fileno=opts.fd)
    worker = Worker(
        sock,
        _arena(opts.arena_in, opts.arena_threshold),
        _arena(opts.arena_out, opts.arena_threshold),
    )
    init = _first_frame(sock)
    worker.model_name = init.get("name", "")
    worker.instance_name = init.get("instance", "")
    worker.decoupled = bool(init.get("decoupled", False))
    _state.install(worker, worker.decoupled, os.path.dirname(os.path.abspath(init["model_file"])))
    import triton_python_backend_utils as pb

    worker.pb = pb
    try:
        cls = import_model(init["model_file"])
        if init["mode"] == "auto":
            config = pb.ModelConfig(init["config"])
            hook = getattr(cls, "auto_complete_config", None)
            if hook is not None:
                result = hook(config)
                if result is not None and hasattr(result, "as_dict"):
                    config = result
            worker.send_msg({"op": "auto", "config": config.as_dict()})
            return
        if is_async_model(cls):
            # the asyncio loop cannot block in recv: a reader thread feeds it
            worker.threaded = True
            threading.Thread(
                target=worker.read_forever, name="modelyard-reader", daemon=True
            ).start()
        model = cls()
        worker.model = model
        if hasattr(model, "initialize"):
            result = model.initialize(init["args"])
            if inspect.iscoroutine(result):
                import asyncio

                asyncio.run(result)
    except BaseException as exc:
        worker.send(Outgoing({"op": "init_err", "e": worker._error_text(exc)}))
        return
    # what initialize built lives as long as the process: keep it out of the collector's
    # full passes, which otherwise walk the model's objects every few thousand requests
    gc.collect()
    gc.freeze()
    worker.send_msg({"op": "ready", "pid": os.getpid(), "async": is_async_model(cls)})
    if is_async_model(cls):
        worker.run_async()
    else:
        worker.run_sync()
    try:
        if hasattr(model, "finalize"):
            model.finalize()
    finally:
        worker.send_msg({"op": "bye"})


if __name__ == "__main__":
    main()
