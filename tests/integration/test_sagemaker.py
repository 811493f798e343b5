"""SageMaker, both faces, against a real server: boto3's ``sagemaker-runtime`` client on the
main port, and the multi-model container contract (``--allow-sagemaker``) with httpx.

``ModelNotReadyException`` is provoked on a second server that waits only 1 ms for a load
(``--load-wait-timeout 0.001``), as a large model's first call does on SageMaker. The
container face under ``--http-server uvicorn`` (a second uvicorn server) runs on a third,
with ``SAGEMAKER_TRITON_DEFAULT_MODEL_NAME`` set; it is also where List Models pages, as the
ASGI path hands the query string over.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from botocore.config import Config

from modelyard.dataplane import DataPlane, DataPlaneOptions
from modelyard.errors import (
    InsufficientMemory,
    InvalidArgument,
    MemoryBusy,
    ModelTooLarge,
    Unavailable,
)
from modelyard.protocol.errors import sagemaker_container_error, sagemaker_error
from modelyard.protocol.sagemaker import SageMakerRoutes, model_folder
from modelyard.testing import RunningServer, free_port, running_server
from modelyard.wire.sagemaker import (
    BINARY_JSON,
    InvalidTargetModel,
    models_page,
    page_token,
    parse_list_query,
)
from tests.factories.onnx_models import add_sub, mlp, write_model

ADD_SUB = """
name: "add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { all: {} }
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
output [
  { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "OUTPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
"""
ENDPOINT = "modelyard"
BIG = 4 << 30  # a sparse file: the model's predicted size is far above the budget


def _add_sub_folder(parent: Path, name: str = "add_sub", *, big: bool = False) -> Path:
    folder = write_model(
        parent, name, add_sub(dims=["batch", 16]), ADD_SUB.replace("add_sub", name)
    )
    if big:
        with (folder / "1" / "weights.bin").open("wb") as f:
            f.truncate(BIG)
    return folder


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    _add_sub_folder(repo)  # version 1: OUTPUT0 = a + b
    swapped = add_sub(dims=["batch", 16], output_names=("OUTPUT1", "OUTPUT0"))
    write_model(repo, "add_sub", swapped, None, version=2)  # version 2: OUTPUT0 = a - b
    write_model(repo, "mlp", mlp(), None)
    _add_sub_folder(repo, "too_big", big=True)
    return repo


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every test's tmp_path is under pytest's base folder: the model root here."""
    return str(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(repository: Path, model_root: str) -> Iterator[RunningServer]:
    args = ["--memory-budget", "1GiB", "--sagemaker-model-root", model_root]
    port = free_port()
    args += ["--allow-sagemaker=true", "--sagemaker-port", str(port)]
    with running_server(repository, args) as s:
        s.sagemaker_port = port  # type: ignore[attr-defined]
        yield s


def _client(server: RunningServer) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.base_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),  # each error seen as it comes
    )


@pytest.fixture(scope="module")
def runtime(server: RunningServer) -> Any:
    return _client(server)


@pytest.fixture(scope="module")
def container(server: RunningServer) -> Iterator[httpx.Client]:
    port = server.sagemaker_port  # type: ignore[attr-defined]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client


def _invoke(runtime: Any, **kwargs: Any) -> dict[str, Any]:
    return runtime.invoke_endpoint(EndpointName=ENDPOINT, **kwargs)  # type: ignore[no-any-return]


A = np.arange(16, dtype=np.float32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.float32)


def _json_body(a: np.ndarray[Any, Any] = A, b: np.ndarray[Any, Any] = B) -> bytes:
    inputs = [
        {"name": n, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        for n, x in (("INPUT0", a), ("INPUT1", b))
    ]
    return orjson.dumps({"inputs": inputs})


def _outputs(body: bytes) -> dict[str, np.ndarray[Any, Any]]:
    doc = orjson.loads(body)
    return {
        o["name"]: np.array(o["data"], dtype=np.float32).reshape(o["shape"]) for o in doc["outputs"]
    }


def _binary_body() -> tuple[bytes, str]:
    inputs = []
    for name, x in (("INPUT0", A), ("INPUT1", B)):
        t = triton.InferInput(name, list(x.shape), "FP32")
        t.set_data_from_numpy(x, binary_data=True)
        inputs.append(t)
    outputs = [triton.InferRequestedOutput(n, binary_data=True) for n in ("OUTPUT0", "OUTPUT1")]
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return body, f"{BINARY_JSON};json-header-size={json_size}"


def _binary_result(body: bytes, content_type: str) -> Any:
    assert content_type.startswith(BINARY_JSON + ";json-header-size=")
    size = int(content_type.rsplit("=", 1)[1])
    return triton.InferenceServerClient.parse_response_body(body, header_length=size)


# -- client face: boto3's sagemaker-runtime --------------------------------------------------


def test_invoke_endpoint_json_picks_the_version_from_the_target_model(runtime: Any) -> None:
    for target, expected in (
        ("add_sub_1.tar.gz", A + B),
        ("add_sub_2.tar.gz", A - B),
        ("add_sub.tar.gz", A - B),  # no version: the newest
    ):
        response = _invoke(
            runtime,
            TargetModel=target,
            Body=_json_body(),
            ContentType="application/json",
            CustomAttributes="trace=1",  # accepted and ignored
        )
        assert response["ContentType"] == "application/json"
        out = _outputs(response["Body"].read())
        np.testing.assert_array_equal(out["OUTPUT0"], expected)


def test_invoke_endpoint_binary_json(runtime: Any) -> None:
    body, content_type = _binary_body()
    response = _invoke(runtime, TargetModel="add_sub_1.tar.gz", Body=body, ContentType=content_type)
    result = _binary_result(response["Body"].read(), response["ContentType"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_a_model_still_loading_is_model_not_ready(tmp_path: Path) -> None:
    write_model(tmp_path, "cold", mlp(), None)
    x = np.zeros((2, 64), dtype=np.float32)
    request = {
        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [2, 64], "data": x.tolist()}]
    }
    call = {
        "TargetModel": "cold_1.tar.gz",
        "Body": orjson.dumps(request),
        "ContentType": "application/json",
    }
    with running_server(tmp_path, ["--load-wait-timeout", "0.001"]) as server:
        runtime = _client(server)
        with pytest.raises(runtime.exceptions.ModelNotReadyException) as info:
            _invoke(runtime, **call)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert "--load-wait-timeout" in info.value.response["Error"]["Message"]
        deadline = time.monotonic() + 30
        while True:  # the load went on: retrying, as AWS's docs advise, is served
            try:
                response = _invoke(runtime, **call)
                break
            except runtime.exceptions.ModelNotReadyException:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert _outputs(response["Body"].read())["OUTPUT"].shape == (2, 10)


def test_bad_input_is_model_error_with_the_original_status(runtime: Any) -> None:
    bad = _json_body(np.zeros((1, 3), dtype=np.float32), np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(runtime.exceptions.ModelError) as info:
        runtime.invoke_endpoint(
            EndpointName=ENDPOINT,
            TargetModel="add_sub_1.tar.gz",
            Body=bad,
            ContentType="application/json",
        )
    response = info.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert "unexpected shape for input 'INPUT0'" in response["OriginalMessage"]
    assert response["Error"]["Message"].startswith("Received client error (400) from model")


def test_malformed_binary_json_is_model_error(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ModelError) as info:
        _invoke(
            runtime,
            TargetModel="add_sub_1.tar.gz",
            Body=b"{}",
            ContentType=f"{BINARY_JSON};json-header-size=99",
        )
    assert "inference header size" in info.value.response["OriginalMessage"]


@pytest.mark.parametrize("target", ["nope_1.tar.gz", "nope.tar.gz", "add_sub_7.tar.gz"])
def test_an_unknown_target_model_is_validation_error(runtime: Any, target: str) -> None:
    with pytest.raises(runtime.exceptions.ValidationError) as info:
        _invoke(runtime, TargetModel=target, Body=_json_body(), ContentType="application/json")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("target", ["..", "dir/..", "._1.tar.gz", "..tar.gz", " "])
def test_a_target_model_no_model_can_have_is_validation_error(runtime: Any, target: str) -> None:
    with pytest.raises(runtime.exceptions.ValidationError) as info:
        _invoke(runtime, TargetModel=target, Body=_json_body(), ContentType="application/json")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_no_target_model_is_validation_error(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ValidationError, match="no target model"):
        runtime.invoke_endpoint(
            EndpointName=ENDPOINT, Body=_json_body(), ContentType="application/json"
        )


def test_a_model_bigger_than_the_budget_is_model_error_507(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ModelError) as info:
        _invoke(
            runtime,
            TargetModel="too_big_1.tar.gz",
            Body=_json_body(),
            ContentType="application/json",
        )
    assert info.value.response["OriginalStatusCode"] == 507
    assert "--memory-budget" in info.value.response["OriginalMessage"]


def test_error_headers_are_what_botocore_reads(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.base_url}/endpoints/{ENDPOINT}/invocations",
        content=_json_body(),
        headers={"X-Amzn-SageMaker-Target-Model": "nope_1.tar.gz"},
    )
    assert response.status_code == 400
    assert response.headers["x-amzn-ErrorType"] == (
        "ValidationError:http://internal.amazon.com/coral/com.amazon.sagemaker/"
    )
    assert response.json() == {"message": "Request for unknown model: 'nope' is not found"}


# -- container face: the multi-model endpoint contract ---------------------------------------


def test_ping(container: httpx.Client) -> None:
    assert container.get("/ping").status_code == 200


def test_model_lifecycle(container: httpx.Client, tmp_path: Path) -> None:
    url = tmp_path / "abc123" / "model"  # SageMaker's /opt/ml/models/<name>/model
    _add_sub_folder(url)  # a folder holding one model folder
    load = {"model_name": "abc123", "url": str(url)}

    assert container.post("/models", json=load).status_code == 200
    again = container.post("/models", json=load)
    assert again.status_code == 409, again.text
    assert container.get("/models").json() == {
        "models": [{"modelName": "abc123", "modelUrl": str(url)}]
    }
    assert container.get("/models/abc123").json() == {"modelName": "abc123", "modelUrl": str(url)}

    headers = {"X-Amzn-SageMaker-Target-Model": "add_sub_1.tar.gz"}
    response = container.post("/models/abc123/invoke", content=_json_body(), headers=headers)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(_outputs(response.content)["OUTPUT0"], A + B)

    body, content_type = _binary_body()
    response = container.post(
        "/models/abc123/invoke", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    result = _binary_result(response.content, response.headers["content-type"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)

    assert container.delete("/models/abc123").status_code == 200
    assert container.get("/models/abc123").status_code == 404
    assert container.delete("/models/abc123").status_code == 404
    assert container.post("/models/abc123/invoke", content=_json_body()).status_code == 404
    assert container.get("/models").json() == {"models": []}


def test_a_model_folder_with_config_at_its_root(container: httpx.Client, tmp_path: Path) -> None:
    folder = _add_sub_folder(tmp_path)
    assert (
        container.post("/models", json={"model_name": "root", "url": str(folder)}).status_code
        == 200
    )
    response = container.post("/models/root/invoke", content=_json_body())
    assert response.status_code == 200, response.text
    assert container.delete("/models/root").status_code == 200


def test_a_model_too_large_for_the_budget_is_507(container: httpx.Client, tmp_path: Path) -> None:
    folder = _add_sub_folder(tmp_path, big=True)
    response = container.post("/models", json={"model_name": "huge", "url": str(folder)})
    assert response.status_code == 507, response.text
    assert "--memory-budget" in response.json()["error"]
    assert container.get("/models/huge").status_code == 404


def test_load_refusals(container: httpx.Client, tmp_path: Path) -> None:
    _add_sub_folder(tmp_path, "one")
    _add_sub_folder(tmp_path, "two")
    several = container.post("/models", json={"model_name": "x", "url": str(tmp_path)})
    assert several.status_code == 400
    assert "none is an ensemble" in several.json()["error"]
    missing = container.post("/models", json={"model_name": "x", "url": str(tmp_path / "no")})
    assert missing.status_code == 400
    assert container.post("/models", content=b"{").status_code == 400
    assert container.get("/models/x").status_code == 404


def test_invocations_with_a_target_model(container: httpx.Client) -> None:
    headers = {"X-Amzn-SageMaker-Target-Model": "add_sub_1.tar.gz"}
    response = container.post("/invocations", content=_json_body(), headers=headers)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(_outputs(response.content)["OUTPUT0"], A + B)
    nothing = container.post("/invocations", content=_json_body())  # no variable, 3 models
    assert nothing.status_code == 400
    assert "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME" in nothing.json()["error"]


def test_list_models_pages_under_the_own_front_end(container: httpx.Client, tmp_path: Path) -> None:
    """The own front end passes the query string too: pages of one, then no token."""
    for name in ("p1", "p2"):
        url = tmp_path / name
        _add_sub_folder(url)
        assert container.post("/models", json={"model_name": name, "url": str(url)}).is_success
    try:
        first = container.get("/models", params={"max_results": "1"}).json()
        assert [m["modelName"] for m in first["models"]] == ["p1"]
        token = first["nextPageToken"]
        second = container.get(
            "/models", params={"max_results": "1", "next_page_token": token}
        ).json()
        assert [m["modelName"] for m in second["models"]] == ["p2"]
        assert "nextPageToken" not in second
        assert [m["modelName"] for m in container.get("/models").json()["models"]] == [
            "p1",
            "p2",
        ]
    finally:
        for name in ("p1", "p2"):
            container.delete(f"/models/{name}")


# -- container face under uvicorn, with SAGEMAKER_TRITON_DEFAULT_MODEL_NAME ------------------


@pytest.fixture(scope="module")
def uvicorn_container(repository: Path, model_root: str) -> Iterator[httpx.Client]:
    port = free_port()
    args = ["--http-server", "uvicorn", "--allow-sagemaker=true", "--sagemaker-port", str(port)]
    args += ["--sagemaker-model-root", model_root]
    env = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "add_sub"}
    with (
        running_server(repository, args, env=env) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client
        client.close()  # an idle keep-alive connection would hold the drain
        assert server.stop() == 0


def test_uvicorn_serves_the_container_face(uvicorn_container: httpx.Client) -> None:
    assert uvicorn_container.get("/ping").status_code == 200
    assert "models" in uvicorn_container.get("/models").json()
    assert uvicorn_container.get("/nope").status_code == 404


def test_invocations_serve_the_default_model_name(uvicorn_container: httpx.Client) -> None:
    """As in Triton: the variable's model, default version (2: OUTPUT0 = a - b); the
    TargetModel header is not read."""
    for headers in ({}, {"X-Amzn-SageMaker-Target-Model": "add_sub_1.tar.gz"}):
        response = uvicorn_container.post("/invocations", content=_json_body(), headers=headers)
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(_outputs(response.content)["OUTPUT0"], A - B)


def test_list_models_pages(uvicorn_container: httpx.Client, tmp_path: Path) -> None:
    names = ["m3", "m1", "m2"]
    for name in names:
        url = tmp_path / name
        _add_sub_folder(url)
        loaded = uvicorn_container.post("/models", json={"model_name": name, "url": str(url)})
        assert loaded.status_code == 200, loaded.text
    try:
        assert "nextPageToken" not in uvicorn_container.get("/models").json()  # all, one page
        seen: list[str] = []
        params = {"max_results": "2"}
        pages = 0
        while True:
            page = uvicorn_container.get("/models", params=params).json()
            pages += 1
            seen += [m["modelName"] for m in page["models"]]
            if "nextPageToken" not in page:
                break
            params = {"max_results": "2", "next_page_token": page["nextPageToken"]}
        assert (seen, pages) == (["m1", "m2", "m3"], 2)

        # a model unloaded between two pages does not shift the next page
        first = uvicorn_container.get("/models", params={"max_results": "1"}).json()
        assert uvicorn_container.delete("/models/m2").status_code == 200
        rest = uvicorn_container.get(
            "/models", params={"next_page_token": first["nextPageToken"]}
        ).json()
        assert [m["modelName"] for m in rest["models"]] == ["m3"]

        garbage = uvicorn_container.get("/models", params={"next_page_token": "garbage!"})
        assert garbage.status_code == 400
        assert "not a token this server issued" in garbage.json()["error"]
        zero = uvicorn_container.get("/models", params={"max_results": "0"})
        assert zero.status_code == 400
        assert "max_results" in zero.json()["error"]
    finally:
        for name in names:
            uvicorn_container.delete(f"/models/{name}")


# -- the mapping, as pure functions -----------------------------------------------------------


def test_page_tokens() -> None:
    urls = {f"m{i}": f"/opt/ml/models/m{i}/model" for i in range(5)}
    first = models_page(urls, *parse_list_query(b"max_results=2"))
    assert [m["modelName"] for m in first["models"]] == ["m0", "m1"]
    assert first["nextPageToken"] == page_token("m1")
    query = f"max_results=3&next_page_token={first['nextPageToken']}".encode()
    last = models_page(urls, *parse_list_query(query))
    assert [m["modelName"] for m in last["models"]] == ["m2", "m3", "m4"]
    assert "nextPageToken" not in last
    assert parse_list_query(b"") == (None, None)
    assert parse_list_query(b"next_page_token=") == (None, None)  # an empty token: page 1
    odd = "a b/é_1"  # names survive the round trip, URL-safe
    assert parse_list_query(f"next_page_token={page_token(odd)}") == (odd, None)
    for bad in ("next_page_token=x", "next_page_token=" + page_token("m1") + "*"):
        with pytest.raises(InvalidArgument, match="not a token this server issued"):
            parse_list_query(bad)
    for bad in ("max_results=-1", "max_results=two", "max_results="):
        with pytest.raises(InvalidArgument, match="max_results"):
            parse_list_query(bad)


def test_invocations_target_rules() -> None:
    """Triton's order: the variable, else (modelyard) TargetModel, else the only model."""
    repo = SimpleNamespace(source=object(), registered=False)
    posted = SimpleNamespace(source=None, registered=True)  # loaded through POST /models
    one = _plane(SimpleNamespace(models={"only": repo, "posted": posted}))
    routes = SageMakerRoutes(one, 1000)
    assert routes.invocations_target(None) == ("only", "")
    assert routes.invocations_target(b"m_3.tar.gz") == ("m", "3")
    routes = SageMakerRoutes(one, 1000, default_model="named")
    assert routes.invocations_target(b"m_3.tar.gz") == ("named", "")
    two = _plane(SimpleNamespace(models={"a": repo, "b": repo}))
    with pytest.raises(InvalidArgument, match="this one has 2"):
        SageMakerRoutes(two, 1000).invocations_target(b"")


def _plane(manager: SimpleNamespace) -> DataPlane:
    options = DataPlaneOptions(control_mode="none", strict_readiness=False, allow_load_files=False)
    return DataPlane(manager, options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "status", "name"),
    [
        (InvalidTargetModel("none"), 400, "ValidationError"),
        (Unavailable("loading"), 429, "ModelNotReadyException"),
        (InsufficientMemory("held"), 429, "ModelNotReadyException"),
        (MemoryBusy("busy"), 429, "ModelNotReadyException"),
        (ModelTooLarge("huge"), 424, "ModelError"),
        (InvalidArgument("bad"), 424, "ModelError"),
        (RuntimeError("bug"), 500, "InternalFailure"),
    ],
)
def test_sagemaker_error_mapping(exc: Exception, status: int, name: str) -> None:
    got_status, _, headers = sagemaker_error(exc)
    assert got_status == status
    assert dict(headers)[b"x-amzn-ErrorType"].split(b":")[0] == name.encode()


def test_container_error_mapping() -> None:
    assert sagemaker_container_error(InsufficientMemory("held"))[0] == 507
    assert sagemaker_container_error(MemoryBusy("busy"))[0] == 503  # waiting frees it: retry
    assert sagemaker_container_error(ModelTooLarge("huge"))[0] == 507
    assert sagemaker_container_error(InvalidArgument("bad"))[0] == 400


def test_model_folder_prefers_the_ensemble(tmp_path: Path) -> None:
    _add_sub_folder(tmp_path, "step")
    ensemble = tmp_path / "pipeline"
    ensemble.mkdir()
    (ensemble / "config.pbtxt").write_text('name: "pipeline"\nplatform:  "ensemble"\n')
    roots = [tmp_path.parent]
    assert model_folder(str(tmp_path), roots) == (ensemble, [tmp_path / "step"])
    assert model_folder(str(tmp_path / "step"), roots) == (tmp_path / "step", [])
    with pytest.raises(InvalidArgument, match="not a folder under the model root"):
        model_folder("/proc/../proc/self", [Path("/")])


def test_an_oversize_body_is_a_sagemaker_error(repository: Path) -> None:
    """Refused before routing, yet answered in the client face's form boto3 understands."""
    with running_server(repository, ["--http-max-input-size", "1000"]) as small:
        runtime = _client(small)
        with pytest.raises(runtime.exceptions.ModelError) as info:
            runtime.invoke_endpoint(
                EndpointName=ENDPOINT,
                TargetModel="mlp",
                Body=b"x" * 5000,
                ContentType="application/json",
            )
        response = info.value.response
        assert response["OriginalStatusCode"] == 400
        assert "exceeds the maximum allowed value of 1000 bytes" in response["OriginalMessage"]
