"""Replays requests recorded from NVIDIA Triton 2.51 and expects Triton's status and body.

The recording (fixtures/triton_protocol.json, made by fixtures/record_triton_protocol.py)
ran Triton on a repository with `add_sub` versions 1 and 2 (policy: latest 1) and a `broken`
model whose config.pbtxt does not parse; the same repository is built here with ONNX models.
Cases where modelyard answers differently on purpose are listed in DIFFERENT with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import RunningServer, running_server
from tests.factories.onnx_models import add_sub, write_model

FIXTURE = Path(__file__).parent / "fixtures" / "triton_protocol.json"
CASES: dict[str, dict[str, Any]] = {
    c["name"]: c for c in json.loads(FIXTURE.read_text())["cases"] if c["phase"] == "none"
}

DIFFERENT = {
    # modelyard lists the broken model with its state and reason; Triton only its name
    "index_no_body",
    "index_empty_object",
    "index_ready_false",
    # Triton's answers name its python backend; ours is onnxruntime (checked elsewhere)
    "server_metadata",
    "add_sub_metadata",
    "add_sub_v2_metadata",
    "add_sub_config",
    "stats_all_before_infer",
    "stats_all",
    "add_sub_stats",
    "add_sub_v2_stats",
    "add_sub_infer_ok_1",
    "add_sub_infer_ok_2",
    "add_sub_infer_ok_3",
}

CONFIG = """
name: "add_sub"
backend: "onnxruntime"
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
        { name: "INPUT1", data_type: TYPE_FP32, dims: [ 16 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
         { name: "OUTPUT1", data_type: TYPE_FP32, dims: [ 16 ] } ]
"""


@pytest.fixture(scope="module")
def triton_like(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("parity")
    write_model(repo, "add_sub", add_sub(), CONFIG, version=1)
    write_model(repo, "add_sub", add_sub(), None, version=2)
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text("name: 'broken'\nthis is not a config {")
    # the recording is of Triton's default mode, which is modelyard's "none"
    with running_server(repo, ["--model-control-mode=none"]) as server:
        yield server


@pytest.mark.parametrize("name", sorted(set(CASES) - DIFFERENT))
def test_same_answer_as_triton(triton_like: RunningServer, name: str) -> None:
    case = CASES[name]
    req, expected = case["request"], case["response"]
    body = req["body"]
    content = body.encode() if isinstance(body, str) else None
    headers = dict(req.get("headers") or {})
    r = httpx.request(
        req["method"],
        triton_like.base_url + req["path"],
        content=content,
        headers=headers,
        timeout=30,
    )
    assert r.status_code == expected["status"], r.text
    if expected["body"].startswith(("{", "[")):
        assert r.json() == json.loads(expected["body"])
    else:
        assert r.text == expected["body"]
