"""pytest tests of add_sub: `modelyard test` runs them with the artifact it is testing."""

import json
import urllib.request
from typing import Any


def _infer(base_url: str, model: str, a: list[float], b: list[float]) -> dict[str, Any]:
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": a},
            {"name": "INPUT1", "datatype": "FP32", "shape": [1, 4], "data": b},
        ]
    }
    request = urllib.request.Request(
        f"{base_url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.load(response)
    return {o["name"]: o["data"] for o in result["outputs"]}


def test_on_the_shared_server(modelyard_artifact: Any) -> None:
    out = _infer(modelyard_artifact.base_url, modelyard_artifact.model, [1, 2, 3, 4], [4, 3, 2, 1])
    assert out["OUTPUT0"] == [5, 5, 5, 5]


def test_on_a_server_of_its_own(modelyard_server: Any, modelyard_artifact: Any) -> None:
    server = modelyard_server(modelyard_artifact.repository)  # on-demand, like production
    out = _infer(server.base_url, modelyard_artifact.model, [1, 2, 3, 4], [1, 1, 1, 1])
    assert out["OUTPUT1"] == [0, 1, 2, 3]
