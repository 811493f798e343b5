"""Bad input over raw HTTP: status, Triton's message, and the server keeps serving."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from modelyard.testing import RunningServer

GOOD = {
    "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": list(range(16))},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": [1] * 16},
    ]
}


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def still_serving(http: httpx.Client) -> Iterator[None]:
    """After every bad request, a good one still gets its answer."""
    yield
    r = http.post("/v2/models/add_sub/infer", json=GOOD)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [float(i + 1) for i in range(16)]


def _error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"}
    return str(body["error"])


def _with(**changes: object) -> dict[str, object]:
    body = json.loads(json.dumps(GOOD))
    body["inputs"][0].update(changes)
    return body


def test_unknown_model(http: httpx.Client) -> None:
    for path in ("/v2/models/nope/infer", "/v2/models/nope/versions/1/infer"):
        msg = _error(http.post(path, json=GOOD), 404)
        assert msg == "Request for unknown model: 'nope' is not found"
    assert _error(http.get("/v2/models/nope"), 404) == (
        "Request for unknown model: 'nope' is not found"
    )
    assert _error(http.get("/v2/models/nope/config"), 404)
    assert http.get("/v2/models/nope/ready").status_code == 400


def test_unknown_version(http: httpx.Client) -> None:
    msg = _error(http.post("/v2/models/add_sub/versions/9/infer", json=GOOD), 404)
    assert msg == "Request for unknown model: 'add_sub' version 9 is not found"


def test_wrong_datatype(http: httpx.Client) -> None:
    body = _with(datatype="INT32", data=list(range(16)))
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 400)
    assert msg == (
        "[request id: <id_unknown>] inference input 'INPUT0' data-type is 'INT32', but model "
        "'add_sub' expects 'FP32'"
    )


def test_wrong_shape(http: httpx.Client) -> None:
    body = _with(shape=[1, 15], data=list(range(15)))
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 400)
    assert msg.startswith(
        "[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model 'add_sub'. "
        "Expected [-1,16], got [1,15]. NOTE: Setting a non-zero max_batch_size"
    )


def test_batch_too_large(http: httpx.Client) -> None:
    body = json.loads(json.dumps(GOOD))
    for t in body["inputs"]:
        t["shape"] = [9, 16]
        t["data"] = [0] * 144
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 400)
    assert msg == (
        "[request id: <id_unknown>] inference request batch-size must be <= 8 for 'add_sub'"
    )


def test_missing_input(http: httpx.Client) -> None:
    body = {"id": "r1", "inputs": [GOOD["inputs"][0]]}
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 400)
    assert msg == (
        "[request id: r1] expected 2 inputs but got 1 inputs for model 'add_sub'. Got input(s) "
        "['INPUT0'], but missing required input(s) ['INPUT1']. Please provide all required "
        "input(s)."
    )


def test_unknown_input_and_output(http: httpx.Client) -> None:
    body = json.loads(json.dumps(GOOD))
    body["inputs"].append({**GOOD["inputs"][0], "name": "EXTRA"})
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 400)
    assert "unexpected inference input 'EXTRA' for model 'add_sub'" in msg
    body = {**GOOD, "outputs": [{"name": "NOPE"}]}
    msg = _error(http.post("/v2/models/add_sub/infer", json=body), 400)
    assert msg == "unexpected inference output 'NOPE' for model 'add_sub'"


def test_malformed_json(http: httpx.Client) -> None:
    msg = _error(http.post("/v2/models/add_sub/infer", content=b'{"inputs": ['), 400)
    assert msg.startswith("failed to parse the request JSON buffer")


def test_binary_body_shorter_than_header_says(http: httpx.Client) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 16],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 64},
                },
                {
                    "name": "INPUT1",
                    "shape": [1, 16],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 64},
                },
            ]
        }
    ).encode()
    body = header + np.zeros(16, np.float32).tobytes() + b"\x00" * 10
    r = http.post(
        "/v2/models/add_sub/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    msg = _error(r, 400)
    assert msg == (
        "unexpected size for input 'INPUT1', expecting 54 additional bytes for model 'add_sub'"
    )


def test_mixed_json_and_binary_inputs(http: httpx.Client) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 16],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 64},
                },
                {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": [2] * 16},
            ],
            "outputs": [
                {"name": "OUTPUT0", "parameters": {"binary_data": True}},
                {"name": "OUTPUT1"},
            ],
        }
    ).encode()
    body = header + np.arange(16, dtype=np.float32).tobytes()
    r = http.post(
        "/v2/models/add_sub/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    json_len = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:json_len])
    out0 = np.frombuffer(r.content[json_len:], dtype=np.float32)
    np.testing.assert_array_equal(out0, np.arange(16) + 2)
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 64}
    assert head["outputs"][1]["data"] == [float(i - 2) for i in range(16)]


def test_oversize_body(http: httpx.Client) -> None:
    big = b"x" * ((1 << 20) + 10)  # the server runs with --http-max-input-size 1 MiB
    msg = _error(http.post("/v2/models/add_sub/infer", content=big), 400)
    assert "exceeds the maximum allowed value of 1048576 bytes" in msg


def test_gzip_bomb_is_refused(http: httpx.Client) -> None:
    bomb = gzip.compress(b"\x00" * (8 << 20))  # 8 MiB of zeros, ~8 KiB compressed
    r = http.post("/v2/models/add_sub/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert "exceeds the maximum allowed value of 1048576 bytes" in _error(r, 400)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_and_response(http: httpx.Client, encoding: str) -> None:
    raw = json.dumps(GOOD).encode()
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    r = http.post(
        "/v2/models/add_sub/infer",
        content=body,
        headers={"Content-Encoding": encoding, "Accept-Encoding": encoding},
    )
    assert r.status_code == 200
    assert r.headers["content-encoding"] == encoding  # httpx decoded it for us
    assert r.json()["outputs"][1]["data"] == [float(i - 1) for i in range(16)]


def test_broken_config_is_unavailable_with_reason(http: httpx.Client) -> None:
    r = http.post("/v2/models/broken/infer", json=GOOD)  # on-demand: this tries the load
    msg = _error(r, 400)
    assert "config.pbtxt:3:1" in msg and 'no field named "bogus"' in msg
    assert http.get("/v2/models/broken/ready").status_code == 400
    index = http.post("/v2/repository/index", json={}).json()
    broken = [row for row in index if row["name"] == "broken"]
    assert broken and broken[0]["state"] == "UNAVAILABLE"
    assert "config.pbtxt:3:1" in broken[0]["reason"]
    ready = http.post("/v2/repository/index", json={"ready": True}).json()
    assert "broken" not in {row["name"] for row in ready}
    assert "add_sub" in {row["name"] for row in ready}


def test_bytes_element_overrun(http: httpx.Client) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 6},
                },
            ]
        }
    ).encode()
    body = header + struct.pack("<I", 10) + b"ab"
    r = http.post(
        "/v2/models/echo_bytes/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert _error(r, 400) == (
        "incomplete string data for inference input 'INPUT0', expecting string of length 10 "
        "but only 2 bytes available"
    )


def test_not_found_route_and_method(http: httpx.Client) -> None:
    assert http.get("/v3/whatever").status_code == 404
    assert http.get("/v2/models/add_sub/infer").status_code == 405


def test_repeated_output_is_answered_once(http: httpx.Client) -> None:
    body = {**GOOD, "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT0"}]}
    r = http.post("/v2/models/add_sub/infer", json=body)
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["outputs"]] == ["OUTPUT0"]


def test_model_failing_at_execution_is_a_500_and_counted(http: httpx.Client) -> None:
    def run(n: int) -> httpx.Response:
        body = {"inputs": [{"name": "INPUT0", "shape": [n], "datatype": "FP32", "data": [1.0] * n}]}
        return http.post("/v2/models/fails_at_run/infer", json=body)

    assert run(4).status_code == 200
    msg = _error(run(3), 500)
    assert msg.startswith("onnx runtime error:") and "Reshape" in msg
    stats = http.get("/v2/models/fails_at_run/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["fail"]["count"] == 1
    assert stats["inference_stats"]["success"]["count"] == 1
    assert run(4).status_code == 200
