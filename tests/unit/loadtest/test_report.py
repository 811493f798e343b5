"""The JSON document and both plot kinds, from a constructed run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from modelyard.errors import InvalidArgument
from modelyard.loadtest import ModelInfo, Options, Result, Slo, StepPlan
from modelyard.loadtest.policy import judge, recommend
from modelyard.loadtest.report import SCHEMA, document, render_html, write_json, write_plot
from tests.unit.loadtest.test_policy import _step


def _result(p99s: tuple[float, ...] = (5, 8, 90)) -> Result:
    slo = Slo(50)
    steps = [judge(_step(10 * 2**i, 10 * 2**i, p), slo) for i, p in enumerate(p99s)]
    options = Options(url="http://127.0.0.1:1", slo=slo, plan=StepPlan(10, 2, 100, True))
    models = [
        ModelInfo("mlp", "", 1.0, "generated", 4, 300, False, 12.5, 12.5, 0.4),
        ModelInfo("add_sub", "1", 2.0, "cases: t", 1, 200, True, None, 0.5, 0.3),
    ]
    return Result(options, "http://127.0.0.1:1", models, steps,
                  recommend(steps, slo), "", ["a warning"], 3.0, 1.8e9)  # fmt: skip


def test_document(tmp_path: Path) -> None:
    doc = document(_result())
    assert doc["schema"] == SCHEMA and doc["mode"] == "open"
    assert [s["verdict"] for s in doc["curve"]] == ["pass", "pass", "slo"]
    rec = doc["recommendation"]
    assert rec["bound"] == "measured"
    assert rec["invocations_per_instance_per_minute"] == 600  # 20/s x 0.5 x 60
    assert rec["sagemaker"]["target_value"] == 600
    assert rec["keda"]["threshold"] == 10.0
    assert doc["models"][0]["cold_start_ms"] == 12.5 and doc["models"][1]["cold_start_ms"] is None
    path = tmp_path / "run.json"
    write_json(doc, path)
    assert json.loads(path.read_text()) == doc  # strict JSON: no NaN anywhere
    nan_step = document(_result((5, math.nan)))["curve"][1]
    assert nan_step["latency_ms"]["p99"] is None


def test_plots(tmp_path: Path) -> None:
    doc = document(_result())
    page = render_html(doc)
    assert page.startswith("<!doctype html>") and "<svg" in page and "<script" not in page
    assert "http" not in page.replace("http://127.0.0.1:1", "").replace(
        "http://www.w3.org/2000/svg", ""
    )  # self-contained: nothing fetched from anywhere
    assert "600 invocations/instance/min" in page and "mlp: 12.5 ms cold" in page
    write_plot(doc, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_plot(doc, tmp_path / "c.svg")
    assert (tmp_path / "c.svg").read_text().startswith("<svg")
    none = document(_result((90,)))
    assert "no step met the SLO" in render_html(none)
    with pytest.raises(InvalidArgument, match=r"\.png, \.html or \.svg"):
        write_plot(doc, tmp_path / "c.jpg")
