"""SageMaker's multi-model container contract, driven the way the platform drives it.

SageMaker unpacks each model's archive to ``/opt/ml/models/<hash>/model`` and calls
``POST /models {"model_name": "<hash>", "url": "/opt/ml/models/<hash>/model"}``; the folders
are named by the platform, never after the model. Here a temporary ``opt/ml/models`` tree is
the model root (``--sagemaker-model-root``); the server starts as Triton's SageMaker
entry point starts it (explicit model control, an empty repository), and the calls come in
the platform's order: load, list, describe, invoke (JSON and Triton's binary+json), unload.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from modelyard.testing import ServerFailed, free_port, running_server, start_server
from modelyard.wire.sagemaker import BINARY_JSON
from tests.factories.onnx_models import add_sub, write_model
from tests.integration.conftest import ADD_SUB

# the ensemble answers its step's OUTPUT0 or OUTPUT1 as its OUTPUT0
PIPELINE = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ] } ]
ensemble_scheduling {
  step [ {
    model_name: "add_sub"
    model_version: -1
    input_map { key: "INPUT0" value: "INPUT0" }
    input_map { key: "INPUT1" value: "INPUT1" }
    output_map { key: "STEP_OUTPUT" value: "OUTPUT0" }
  } ]
}
"""
A = np.arange(16, dtype=np.float32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.float32)


def _add_sub(parent: Path, name: str = "add_sub") -> Path:
    return write_model(parent, name, add_sub(dims=["batch", 16]), ADD_SUB)


def _pipeline(url: Path, step_output: str) -> None:
    _add_sub(url)
    ensemble = url / "pipeline"
    (ensemble / "1").mkdir(parents=True)
    (ensemble / "config.pbtxt").write_text(PIPELINE.replace("STEP_OUTPUT", step_output))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/opt/ml/models/<hash>/model`` folders, as SageMaker lays them out."""
    base = tmp_path_factory.mktemp("sagemaker")
    models = base / "opt" / "ml" / "models"
    # the url is the model folder itself, named "model", its config naming "add_sub"
    single = models / "a1b2c3" / "model"
    single.mkdir(parents=True)
    (single / "config.pbtxt").write_text(ADD_SUB)
    write_model(single.parent, "model", add_sub(dims=["batch", 16]), None)
    _add_sub(models / "d4e5f6" / "model")  # the url holds one model folder
    _pipeline(models / "e0e0e0" / "model", "OUTPUT0")  # an ensemble and its step: a + b
    _pipeline(models / "f1f1f1" / "model", "OUTPUT1")  # the same names, another model: a - b
    _add_sub(base / "outside" / "model")  # a valid model, outside the root
    os.symlink(base / "outside", models / "linked")  # inside the root, leading out of it
    return models


@pytest.fixture(scope="module")
def container(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    empty = tmp_path_factory.mktemp("empty-repository")  # Triton's /tmp/sagemaker
    port = free_port()
    args = ["--model-control-mode", "explicit", "--allow-sagemaker=true"]
    args += ["--sagemaker-port", str(port), "--sagemaker-model-root", str(tree)]
    with (
        running_server(empty, args) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        client.server = server  # type: ignore[attr-defined]
        yield client


def _json_body() -> bytes:
    inputs = [
        {"name": n, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        for n, x in (("INPUT0", A), ("INPUT1", B))
    ]
    return orjson.dumps({"inputs": inputs})


def _json_invoke(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.post(
        f"/models/{name}/invoke",
        content=_json_body(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return orjson.loads(response.content)  # type: ignore[no-any-return]


def _output0(doc: dict[str, Any]) -> np.ndarray[Any, Any]:
    (out,) = [o for o in doc["outputs"] if o["name"] == "OUTPUT0"]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def _binary_invoke(client: httpx.Client, name: str) -> Any:
    inputs = []
    for n, x in (("INPUT0", A), ("INPUT1", B)):
        t = triton.InferInput(n, list(x.shape), "FP32")
        t.set_data_from_numpy(x, binary_data=True)
        inputs.append(t)
    outputs = [triton.InferRequestedOutput("OUTPUT0", binary_data=True)]
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    response = client.post(
        f"/models/{name}/invoke",
        content=body,
        headers={"Content-Type": f"{BINARY_JSON};json-header-size={json_size}"},
    )
    assert response.status_code == 200, response.text
    content_type = response.headers["content-type"]
    assert content_type.startswith(BINARY_JSON + ";json-header-size=")
    size = int(content_type.rsplit("=", 1)[1])
    return triton.InferenceServerClient.parse_response_body(response.content, header_length=size)


@pytest.mark.parametrize(
    ("model_name", "folder", "expected"),
    [
        ("a1b2c3", "a1b2c3", A + B),  # the url is a model folder named "model"
        ("d4e5f6", "d4e5f6", A + B),  # the url holds the model folder
        ("e0e0e0", "e0e0e0", A + B),  # an ensemble is the entry point
    ],
)
def test_the_platform_s_calls_in_order(
    container: httpx.Client, tree: Path, model_name: str, folder: str, expected: Any
) -> None:
    url = str(tree / folder / "model")
    load = {"model_name": model_name, "url": url}
    loaded = container.post("/models", json=load)
    assert loaded.status_code == 200, loaded.text
    try:
        assert container.post("/models", json=load).status_code == 409
        listed = container.get("/models").json()["models"]
        assert {"modelName": model_name, "modelUrl": url} in listed
        assert container.get(f"/models/{model_name}").json() == {
            "modelName": model_name,
            "modelUrl": url,
        }
        doc = _json_invoke(container, model_name)
        assert doc["model_name"] == model_name  # served under the platform's name
        np.testing.assert_array_equal(_output0(doc), expected)
        np.testing.assert_array_equal(
            _binary_invoke(container, model_name).as_numpy("OUTPUT0"), expected
        )
    finally:
        assert container.delete(f"/models/{model_name}").status_code == 200
    assert container.get(f"/models/{model_name}").status_code == 404
    assert container.post(f"/models/{model_name}/invoke", content=_json_body()).status_code == 404
    assert container.delete(f"/models/{model_name}").status_code == 404
    assert all(m["modelName"] != model_name for m in container.get("/models").json()["models"])


def test_two_models_whose_steps_share_names(container: httpx.Client, tree: Path) -> None:
    """Each model's steps are its own (Triton's model namespacing): the same folder names in
    two archives do not clash, and unloading one leaves the other serving."""
    for name in ("e0e0e0", "f1f1f1"):
        load = {"model_name": name, "url": str(tree / name / "model")}
        assert container.post("/models", json=load).status_code == 200
    try:
        np.testing.assert_array_equal(_output0(_json_invoke(container, "e0e0e0")), A + B)
        np.testing.assert_array_equal(_output0(_json_invoke(container, "f1f1f1")), A - B)
        assert container.delete("/models/e0e0e0").status_code == 200
        np.testing.assert_array_equal(_output0(_json_invoke(container, "f1f1f1")), A - B)
    finally:
        container.delete("/models/e0e0e0")
        assert container.delete("/models/f1f1f1").status_code == 200
    index = httpx.post(f"{container.server.base_url}/v2/repository/index").json()  # type: ignore[attr-defined]
    assert [row for row in index if row.get("state") == "READY"] == []


def test_unload_of_an_unknown_model_is_404(container: httpx.Client) -> None:
    assert container.delete("/models/never-loaded").status_code == 404
    assert container.get("/models/never-loaded").status_code == 404


def _refused(container: httpx.Client, url: str) -> str:
    response = container.post("/models", json={"model_name": "intruder", "url": url})
    assert 400 <= response.status_code < 500, response.text
    assert container.get("/models/intruder").status_code == 404
    return str(response.json()["error"])


def test_only_folders_under_the_model_root_load(container: httpx.Client, tree: Path) -> None:
    outside = tree.parent.parent.parent / "outside" / "model"
    for url in (
        str(outside),  # a valid model, outside the root
        f"{tree}/a1b2c3/../../../../outside/model",  # ".." out of the root
        str(tree / "linked" / "model"),  # a link inside the root that leads out
        str(tree),  # the root itself
        "/etc",
        "/",
        "model",  # relative
    ):
        error = _refused(container, url)
        assert "--sagemaker-model-root" in error
        for listed in ("add_sub", "passwd", "hosts", "pipeline"):
            assert listed not in error, (url, error)  # no folder's contents
    error = _refused(container, str(tree / "nothing-here"))
    assert "not a folder" in error


def test_model_names_the_platform_cannot_send(container: httpx.Client, tree: Path) -> None:
    url = str(tree / "a1b2c3" / "model")
    for name in (".", "..", "a/b", "", " "):
        response = container.post("/models", json={"model_name": name, "url": url})
        assert response.status_code == 400, (name, response.text)
    assert container.get("/models").json() == {"models": []}


def test_the_container_environment(tree: Path, tmp_path: Path) -> None:
    """SageMaker's variables, as the platform sets them: the port to bind, a multi-model
    endpoint; and a safe port range the HTTP port lies outside stops the start, in
    Triton's words."""
    port = free_port()
    env = {
        "SAGEMAKER_MULTI_MODEL": "true",
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_TRITON_ALLOW_METRICS": "false",
    }
    args = ["--allow-sagemaker=true", "--sagemaker-model-root", str(tree)]
    with (
        running_server(tmp_path, args, env=env),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        assert client.get("/ping").status_code == 200
        url = str(tree / "a1b2c3" / "model")
        assert client.post("/models", json={"model_name": "env", "url": url}).status_code == 200
        np.testing.assert_array_equal(_output0(_json_invoke(client, "env")), A + B)
        assert client.delete("/models/env").status_code == 200
    narrow = {**env, "SAGEMAKER_SAFE_PORT_RANGE": "1-2"}
    with pytest.raises(ServerFailed, match=r"allowed port range is \[1, 2\]"):
        start_server(tmp_path, args, env=narrow).stop()  # (stopped should it start)
