"""``modelyard loadtest`` end to end: the command, as a user runs it, against a real server of
real ONNX models loaded on demand. Loose SLOs (the runs must pass on a loaded 2-core machine)
and impossible ones; no assertion on how fast anything is."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelyard.testing import RunningServer, running_server
from modelyard.testing.server import free_port
from tests.factories.onnx_models import add_sub, mlp, write_model

QUICK = ["--duration", "0.5", "--warmup", "0.2", "--timeout", "20"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "add_sub", add_sub(dims=["batch", 16]), None)
    write_model(repo, "mlp", mlp(), None)
    with running_server(repo) as s:
        yield s


def _loadtest(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", "loadtest", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _successes(server: RunningServer) -> dict[str, float]:
    """nv_inference_request_success per model, as the server counts it."""
    out: dict[str, float] = {}
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (
                "nv_inference_request_success",
                "nv_inference_request_success_total",
            ):
                model = sample.labels["model"]
                out[model] = out.get(model, 0.0) + sample.value
    return out


def _sent(doc: dict[str, Any]) -> int:
    """Every request the run made: two first ones per model, then each step's."""
    return 2 * len(doc["models"]) + sum(s["ok_total"] for s in doc["curve"])


def test_a_loose_slo_steps_to_the_maximum_and_recommends_a_lower_bound(
    server: RunningServer, tmp_path: Path
) -> None:
    before = _successes(server)
    out = _loadtest(
        "--url", server.base_url, "--p99-ms", "5000", *QUICK,
        "--model", "add_sub=3", "--model", "mlp",
        "--start-rate", "20", "--step", "x2", "--max-rate", "80", "--instances", "2",
        "--json", str(tmp_path / "run.json"), "--plot", str(tmp_path / "curve.html"),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    assert [s["level"] for s in doc["curve"]] == [20, 40, 80]
    assert [s["verdict"] for s in doc["curve"]] == ["pass"] * 3
    assert all(s["errors"] == 0 and s["latency_ms"]["count"] > 0 for s in doc["curve"])
    assert all(s["client"]["cpu_us_per_request"] > 0 for s in doc["curve"])
    rec = doc["recommendation"]
    assert (rec["bound"], rec["limited_by"]) == ("lower", "max-level")
    best = max(s["throughput_rps"] for s in doc["curve"])
    assert rec["max_sustainable_rps"] == best
    assert rec["max_sustainable_rps_per_instance"] == pytest.approx(best / 2, abs=1e-3)
    assert rec["invocations_per_instance_per_minute"] == math.floor(best / 2 * 0.5 * 60)
    assert f"{rec['invocations_per_instance_per_minute']} invocations per instance" in out.stdout
    # a fresh on-demand server: the first request to each model was its cold start
    models = {m["name"]: m for m in doc["models"]}
    assert [models[n]["was_loaded"] for n in ("add_sub", "mlp")] == [False, False]
    assert all(m["cold_start_ms"] > 0 and m["warm_request_ms"] > 0 for m in models.values())
    assert set(doc["curve"][-1]["per_model"]) == {"add_sub", "mlp"}
    # what the client counted is what the server answered
    after = _successes(server)
    assert set(after) == {"add_sub", "mlp"}
    assert sum(after.values()) - sum(before.values()) == _sent(doc)
    page = (tmp_path / "curve.html").read_text()
    assert "<svg" in page and str(rec["invocations_per_instance_per_minute"]) in page


def test_an_impossible_slo_has_no_target_and_exits_3(server: RunningServer, tmp_path: Path) -> None:
    out = _loadtest(
        "--url", server.base_url, "--p99-ms", "0.0001", *QUICK, "--model", "mlp",
        "--json", str(tmp_path / "run.json"), "--plot", str(tmp_path / "curve.png"),
    )  # fmt: skip
    assert out.returncode == 3, out.stdout + out.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    assert [s["verdict"] for s in doc["curve"]] == ["slo"]  # the first level failed: no more
    rec = doc["recommendation"]
    assert rec["bound"] == "none" and rec["invocations_per_instance_per_minute"] is None
    assert "no recommendation" in out.stderr
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_closed_loop_over_sagemaker_with_recorded_cases_stops_at_the_request_cap(
    server: RunningServer, tmp_path: Path
) -> None:
    cases = tmp_path / "add_sub" / "tests"
    cases.mkdir(parents=True)
    (cases / "cases.yaml").write_text(
        "cases:\n"
        f"  - inputs: {{INPUT0: [{[1.0] * 16}], INPUT1: [{[2.0] * 16}]}}\n"
        f"    outputs: {{OUTPUT0: [{[3.0] * 16}]}}\n"
    )
    (tmp_path / "mix.yaml").write_text(
        "models:\n"
        "  - {name: add_sub, weight: 2, cases: add_sub/tests}\n"
        "  - {name: mlp, batch_size: 3}\n"
    )
    before = _successes(server)
    out = _loadtest(
        "--url", server.base_url, "--p99-ms", "5000", "--duration", "60", "--warmup", "0",
        "--protocol", "sagemaker", "--mix", str(tmp_path / "mix.yaml"),
        "--concurrency", "2", "--max-requests", "60", "--json", str(tmp_path / "run.json"),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["mode"] == "closed" and doc["protocol"] == "sagemaker"
    assert doc["stopped_by"] == "request-cap"
    assert sum(s["sent_total"] for s in doc["curve"]) == 60
    assert doc["models"][0]["source"].startswith("cases: ") and doc["models"][0]["bodies"] == 1
    assert doc["curve"][0]["ok"] > 0 and doc["curve"][0]["errors"] == 0
    assert sum(_successes(server).values()) - sum(before.values()) == _sent(doc)


def test_cold_start_after_unloading_a_loaded_model(server: RunningServer, tmp_path: Path) -> None:
    body = {"inputs": [{"name": "INPUT", "shape": [1, 64], "datatype": "FP32",
                        "data": np.zeros(64).tolist()}]}  # fmt: skip
    assert httpx.post(f"{server.base_url}/v2/models/mlp/infer", json=body).status_code == 200
    out = _loadtest(
        "--url", server.base_url, "--p99-ms", "5000", *QUICK, "--model", "mlp",
        "--rate", "20", "--cold-start", "unload", "--json", str(tmp_path / "run.json"),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    (model,) = json.loads((tmp_path / "run.json").read_text())["models"]
    assert model["was_loaded"] is False and model["cold_start_ms"] > 0


def test_an_unknown_model_is_a_clear_error(server: RunningServer) -> None:
    out = _loadtest("--url", server.base_url, "--p99-ms", "50", "--model", "nope")
    assert out.returncode == 1
    assert "model 'nope' is not on" in out.stderr
    assert "index lists: add_sub, mlp" in out.stderr


def test_an_unreachable_url_and_bad_usage() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = _loadtest("--url", url, "--p99-ms", "50")
    assert out.returncode == 1
    assert f"cannot reach {url}" in out.stderr and "refused" in out.stderr
    bad = _loadtest("--url", url, "--p99-ms", "50", "--plot", "curve.jpg")
    assert bad.returncode == 2 and ".png, .html or .svg" in bad.stderr
    bad = _loadtest("--url", "ftp://x", "--p99-ms", "50")
    assert bad.returncode == 2 and "--url 'ftp://x'" in bad.stderr
