"""The status page on a real server, in a real browser (Debian's Chromium, driven by
Playwright), and its JSON against ``/metrics``.

The server runs on-demand over three models: ``gated``, a Python model whose ``initialize``
waits for a file the test creates (so its LOADING state lasts exactly as long as the test
needs, with no timing involved), ``add_sub`` (ONNX) and ``crashes``, a Python model whose
``initialize`` raises (its load error, with the reason, must show). Everything waits on what
the page shows, with generous deadlines; nothing asserts how long anything took.

``MODELYARD_STATUS_SCREENSHOT=docs/status-page.png`` saves the screenshot the docs show
(otherwise it goes to the test's temporary folder).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelyard.testing import RunningServer, running_server
from tests.factories.onnx_models import add_sub, write_model
from tests.factories.python_models import CRASH_AT_INIT_PY, write_python_model
from tests.integration.conftest import ADD_SUB

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOTHING = "\u2013"  # what the page shows for a figure it has not got (an en dash)
DEADLINE = 60.0  # seconds: generous, for a loaded machine; never a measurement

GATED_PY = """import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        while not os.path.exists({gate!r}):  # the test opens the gate when it has seen LOADING
            time.sleep(0.05)

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
            for r in requests
        ]
"""

GATED_CONFIG = """name: "gated"
backend: "python"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_FP32, dims: [ 2 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ 2 ] } ]
"""

CRASHES_CONFIG = """name: "crashes"
backend: "python"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ 1 ] } ]
"""

# a load error whose text is markup: the page must show it as text
HOSTILE_PY = """class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("<img src=x onerror=\\"document.title='pwned'\\"> in the reason")

    def execute(self, requests):
        return []
"""

ADD_SUB_BODY = {
    "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": [2.0] * 16},
    ]
}
GATED_BODY = {"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gate") / "open"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gate: Path) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    write_python_model(repo, "gated", GATED_PY.format(gate=str(gate)), GATED_CONFIG)
    write_python_model(repo, "crashes", CRASH_AT_INIT_PY, CRASHES_CONFIG)
    args = ["--model-control-mode", "on-demand", "--memory-budget", "4GiB"]
    with running_server(repo, args) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system (CI never skips this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _until(check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not seen within {deadline:g} s (last: {last!r})")


def _status(server: RunningServer, **kw: Any) -> dict[str, Any]:
    r = httpx.get(f"{server.base_url}/v2/status", timeout=30, **kw)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def _row(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in status["models"] if m["name"] == name)


def test_the_page_shows_loading_then_ready_an_error_and_moving_counters(
    server: RunningServer, browser: Any, gate: Path, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    problems: list[str] = []  # console errors include Content-Security-Policy violations
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server.base_url + "/")

    def state(model: str) -> str:
        cell = page.locator(f'tr[data-model="{model}"] .state')
        return str(cell.inner_text()) if cell.count() else ""

    def cell(model: str, column: str) -> str:
        return str(page.locator(f'tr[data-model="{model}"] td.{column}').inner_text())

    _until(lambda: state("add_sub") == "UNLOADED", "add_sub listed, not loaded")
    assert state("gated") == "UNLOADED"
    assert page.locator("#version").inner_text() == _status(server)["server"]["version"]

    # a request for the gated model starts its load; it stays LOADING until the gate opens
    answers: list[httpx.Response] = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{server.base_url}/v2/models/gated/infer", json=GATED_BODY, timeout=120)
        )
    )
    waiter.start()
    try:
        _until(lambda: state("gated") == "LOADING", "gated LOADING on the page")
    finally:
        gate.touch()
        waiter.join(timeout=120)
    assert answers and answers[0].status_code == 200, answers
    _until(lambda: state("gated") == "READY", "gated READY on the page")
    assert cell("gated", "requests") == "1"
    assert cell("gated", "p50") != NOTHING

    # requests move the counters: per model and the cache's
    for _ in range(5):
        r = httpx.post(f"{server.base_url}/v2/models/add_sub/infer", json=ADD_SUB_BODY, timeout=60)
        assert r.status_code == 200, r.text
    _until(lambda: cell("add_sub", "requests") == "5", "add_sub's 5 requests on the page")
    assert state("add_sub") == "READY"
    assert cell("add_sub", "p50") != NOTHING and cell("add_sub", "p99") != NOTHING
    status = _status(server)
    hits, misses = status["cache"]["hits"], status["cache"]["misses"]
    assert (hits, misses) == (4, 2)  # one miss per first request, the rest hits
    _until(lambda: page.locator("#hits").inner_text() == str(hits), "the cache hits")
    assert page.locator("#misses").inner_text() == str(misses)
    assert page.locator("#loaded").inner_text() == "2"
    assert page.locator("#loads").inner_text() == "2"

    # a failed load: the error and its reason
    r = httpx.post(f"{server.base_url}/v2/models/crashes/infer", json=GATED_BODY, timeout=120)
    assert r.status_code >= 400
    error = page.locator('#errors li[data-model="crashes"]')
    _until(lambda: error.count() == 1, "the load error listed")
    assert "weights file is missing" in error.inner_text()
    _until(lambda: state("crashes") == "FAILED", "crashes FAILED on the page")

    shot = Path(os.environ.get("MODELYARD_STATUS_SCREENSHOT") or tmp_path / "status-page.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert problems == []
    page.close()


def test_the_json_says_what_metrics_says(server: RunningServer) -> None:
    """Same numbers: read /metrics, the status, /metrics again; compared when nothing moved
    between the two scrapes (a request in between would make them differ)."""
    r = httpx.post(f"{server.base_url}/v2/models/add_sub/infer", json=ADD_SUB_BODY, timeout=60)
    assert r.status_code == 200

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.name.startswith("process_")
        }

    def settled() -> tuple[dict[str, Any], dict[Any, float]] | None:
        before = scrape()
        status = _status(server)
        return (status, before) if scrape() == before else None

    status, m = _until(settled, "two equal scrapes around the status")

    def one(name: str, **labels: str) -> float:
        # the parser names every counter's sample <family>_total, as OpenMetrics does
        key = tuple(sorted(labels.items()))
        return m[(name, key)] if (name, key) in m else m[(name + "_total", key)]

    assert status["cache"]["hits"] == one("modelyard_model_cache_hits_total")
    assert status["cache"]["misses"] == one("modelyard_model_cache_misses_total")
    assert status["loads"]["evictions"] == one("modelyard_model_evictions_total")
    assert status["loaded_models"] == one("modelyard_loaded_models")
    assert status["memory"]["used_bytes"] == one("modelyard_model_memory_bytes")
    assert status["memory"]["budget_bytes"] == one("modelyard_model_memory_budget_bytes")
    assert status["memory"]["budget_bytes"] == 4 * 2**30
    assert status["loads"]["count"] == one("modelyard_model_load_seconds_count")
    assert status["loads"]["seconds"] == pytest.approx(one("modelyard_model_load_seconds_sum"))
    assert status["loads"]["wait_count"] == one("modelyard_model_load_wait_seconds_count")
    assert status["loads"]["unloads"] == one("modelyard_model_unload_seconds_count")
    served = 0
    for model in status["models"]:
        if model["size_bytes"]:
            estimate = one("modelyard_model_memory_estimate_bytes", model=model["name"])
            assert model["size_bytes"] == estimate
        for v in model["versions"]:
            labels = {"model": model["name"], "version": v["version"]}
            if ("nv_inference_request_success_total", tuple(sorted(labels.items()))) not in m:
                assert v["requests"] == v["failures"] == 0  # never served: no sample
                continue
            served += 1
            assert v["requests"] == one("nv_inference_request_success", **labels)
            assert v["failures"] == one("nv_inference_request_failure", reason="BACKEND", **labels)
            if v["state"] == "READY":
                load = one("nv_model_load_duration_secs", **labels)
                assert model["load_seconds"] == pytest.approx(load)
        if model["versions"] and model["requests"]:
            assert model["inferences"] == sum(
                one("nv_inference_count", model=model["name"], version=v["version"])
                for v in model["versions"]
            )
    assert served >= 2  # add_sub and gated, with their requests
    assert _row(status, "add_sub")["requests"] >= 1


def test_the_status_follows_the_token_policy_and_the_page_asks_for_a_token(
    tmp_path: Path, browser: Any
) -> None:
    """With tokens on, and a load error whose reason is markup (shown as text)."""
    repo = tmp_path / "repo"
    write_model(repo, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    write_python_model(repo, "hostile", HOSTILE_PY, CRASHES_CONFIG.replace("crashes", "hostile"))
    tokens = tmp_path / "tokens"
    tokens.write_text("inference status-page-reader-0123\n")
    tokens.chmod(0o600)
    headers = {"Authorization": "Bearer status-page-reader-0123"}
    with running_server(repo, ["--auth-token-file", str(tokens)], headers=headers) as s:
        assert httpx.get(f"{s.base_url}/v2/status", timeout=30).status_code == 401
        assert httpx.get(f"{s.base_url}/metrics", timeout=30).status_code == 401
        assert httpx.get(f"{s.base_url}/v2/status", headers=headers, timeout=30).status_code == 200
        page_answer = httpx.get(f"{s.base_url}/", timeout=30)  # the shell holds no data
        assert page_answer.status_code == 200
        assert "add_sub" not in page_answer.text
        page = browser.new_page()
        page.goto(s.base_url + "/")
        _until(lambda: page.locator("#auth").is_visible(), "the token form")
        assert page.locator('tr[data-model="add_sub"]').count() == 0
        page.fill("#token", "status-page-reader-0123")
        page.click("#auth button")
        _until(lambda: page.locator('tr[data-model="add_sub"]').count() == 1, "the models")
        assert not page.locator("#auth").is_visible()
        r = httpx.post(
            f"{s.base_url}/v2/models/hostile/infer", json=GATED_BODY, headers=headers, timeout=120
        )
        assert r.status_code >= 400
        error = page.locator('#errors li[data-model="hostile"]')
        _until(lambda: error.count() == 1, "the hostile load error listed")
        assert "<img src=x" in error.inner_text()
        assert page.locator("#errors img").count() == 0
        assert page.title() == "modelyard status"
        page.close()


def test_the_flag_turns_the_page_off(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    with running_server(repo, ["--http-status-page", "false"]) as s:
        for path in ("/", "/v2/status"):
            r = httpx.get(f"{s.base_url}{path}", timeout=30)
            assert r.status_code == 404, (path, r.text)
        assert httpx.get(f"{s.base_url}/metrics", timeout=30).status_code == 200
