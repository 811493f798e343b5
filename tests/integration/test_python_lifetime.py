"""How long Python workers live: a hung ``initialize`` ends at the load timeout, and no
worker outlives the server, whether it is stopped with SIGTERM or killed with SIGKILL.

Processes are found and watched with psutil from outside the server; every wait has a
generous deadline (a loaded 2-core machine), none asserts a duration.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.http as triton_http

from modelyard.testing import RunningServer, running_server
from modelyard.testing.server import start_server
from tests.factories.python_models import add_sub_model, hang_at_init_model, sleep_model

_X = {"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
_SLEEP = {"inputs": [{"name": "SECONDS", "shape": [1], "datatype": "FP32", "data": [600.0]}]}


def _workers(server: RunningServer, instance: str = "") -> list[psutil.Process]:
    found = []
    for proc in psutil.Process(server.process.pid).children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if "modelyard_worker" in " ".join(cmdline) and (not instance or instance in cmdline):
            found.append(proc)
    return found


def _until(check: Callable[[], bool], what: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def _all_gone(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still alive after a generous wait (zombies count as gone)."""
    _, alive = psutil.wait_procs(procs, timeout=60)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _add_sub_works(server: RunningServer) -> None:
    client = triton_http.InferenceServerClient(server.url)
    a = triton_http.InferInput("INPUT0", [16], "FP32")
    a.set_data_from_numpy(np.arange(16, dtype=np.float32))
    b = triton_http.InferInput("INPUT1", [16], "FP32")
    b.set_data_from_numpy(np.ones(16, dtype=np.float32))
    result = client.infer("py_add_sub", [a, b])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.arange(16) + 1)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    add_sub_model(tmp_path)
    hang_at_init_model(tmp_path)
    sleep_model(tmp_path, "hang_exec")
    return tmp_path


def test_hung_initialize_is_unavailable_after_the_load_timeout(repo: Path) -> None:
    """Before: LOADING until the 300 s start timeout nobody could set. Now the load fails
    at --model-load-timeout with that reason, in the request's error and in the index, its
    worker is killed, and the other models serve throughout."""
    with (
        running_server(repo, ["--model-load-timeout", "3"]) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as client,
        cf.ThreadPoolExecutor(1) as pool,
    ):
        hung = pool.submit(client.post, "/v2/models/hang_init/infer", json=_X)
        _until(lambda: bool(_workers(srv, "hang_init_0")), "the hung worker to start")
        hung_workers = _workers(srv, "hang_init_0")
        _add_sub_works(srv)  # while the other model hangs in initialize
        answer = hung.result(timeout=120)
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert "initialize did not finish within the model load timeout of 3 s" in error
        assert "--model-load-timeout" in error
        index = client.post("/v2/repository/index", json={}).json()
        (entry,) = [e for e in index if e["name"] == "hang_init"]
        assert entry["state"] == "UNAVAILABLE"
        assert "model load timeout" in entry["reason"]
        assert _all_gone(hung_workers) == []
        _add_sub_works(srv)


def _server_with_hung_workers(repo: Path) -> tuple[RunningServer, list[psutil.Process]]:
    """A server with three workers: idle, hung in execute, hung in initialize."""
    srv = start_server(repo, ["--model-load-timeout", "600", "--exit-timeout-secs", "5"])
    _add_sub_works(srv)
    pool = cf.ThreadPoolExecutor(2)
    for model, body in (("hang_init", _X), ("hang_exec", _SLEEP)):
        pool.submit(httpx.post, f"{srv.base_url}/v2/models/{model}/infer", json=body, timeout=900)
    pool.shutdown(wait=False)
    _until(lambda: len(_workers(srv)) == 3, "three workers")
    # hang_exec is loaded once its worker answered initialize; then its request is inside
    _until(
        lambda: httpx.get(f"{srv.base_url}/v2/models/hang_exec/ready").status_code == 200,
        "hang_exec to be ready",
    )
    return srv, _workers(srv)


def test_sigkill_of_the_server_takes_every_worker_with_it(repo: Path) -> None:
    """Before: the workers lived on, orphaned (parent 1). Now the kernel kills them with
    the server (PR_SET_PDEATHSIG), however they were busy."""
    srv, workers = _server_with_hung_workers(repo)
    try:
        os.kill(srv.process.pid, signal.SIGKILL)
        srv.process.wait(60)
        assert _all_gone(workers) == []
    finally:
        srv.stop()
        for proc in workers:  # never leave one behind, even when the test fails
            if proc.is_running():
                proc.kill()


def test_sigterm_with_hung_workers_leaves_no_child_behind(repo: Path) -> None:
    srv, workers = _server_with_hung_workers(repo)
    try:
        srv.process.send_signal(signal.SIGTERM)
        code = srv.process.wait(120)  # the server exits on its own: no SIGKILL from here
        assert code in (0, 1), srv.output()  # 1: the exit timeout expired, as in Triton
        assert _all_gone(workers) == []
        assert "killing" in srv.output()  # it said what it did
    finally:
        srv.stop()
        for proc in workers:
            if proc.is_running():
                proc.kill()
