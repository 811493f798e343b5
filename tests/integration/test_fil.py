"""Triton FIL repositories served by a real server: tritonclient and boto3's SageMaker client
get the library's own predictions for every model_type; a missing optional library is a clear
load error (the server runs with an import hook that refuses it), never a failed start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from botocore.config import Config
from tritonclient.utils import InferenceServerException

from modelyard.testing import RunningServer, running_server
from tests.factories.trees import CASES, FEATURES, TreeCase, rows

X = rows(32)
BY_NAME = {case.name: case for case in CASES}

# Makes `import <name>` fail for the names in FIL_TEST_BLOCK, as on a machine without them.
BLOCKER = """
import os, sys

class _Block:
    names = set(os.environ.get("FIL_TEST_BLOCK", "").split(","))

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{name}' (blocked by the test)")
        return None

sys.meta_path.insert(0, _Block())
"""


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    return {case.name: case.train() for case in CASES}


@pytest.fixture(scope="module")
def repository(trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("fil-repo")
    for case in CASES:
        case.write(repo, trained[case.name])
    return repo


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    with running_server(repository) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.url)
    yield c
    c.close()


def _infer(client: triton.InferenceServerClient, name: str, x: Any, binary: bool = True) -> Any:
    tensor = triton.InferInput("input__0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = triton.InferRequestedOutput("output__0", binary_data=binary)
    result = client.infer(name, [tensor], outputs=[wanted])
    assert result.get_output("output__0")["datatype"] == "FP32"
    return result.as_numpy("output__0")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_tritonclient_gets_the_librarys_predictions(
    case: TreeCase, client: triton.InferenceServerClient, trained: dict[str, Any]
) -> None:
    expected = case.expected(trained[case.name], X)
    for binary in (True, False):
        out = _infer(client, case.name, X, binary)
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def _sagemaker(server: RunningServer) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.base_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),
    )


def _invoke(runtime: Any, name: str, x: Any) -> dict[str, Any]:
    body = {
        "inputs": [
            {
                "name": "input__0",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": np.nan_to_num(x, nan=-1.0).ravel().tolist(),
            }
        ]
    }
    return runtime.invoke_endpoint(  # type: ignore[no-any-return]
        EndpointName="modelyard",
        TargetModel=f"{name}_1.tar.gz",
        Body=orjson.dumps(body),
        ContentType="application/json",
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_sagemaker_invoke_endpoint_gets_the_librarys_predictions(
    case: TreeCase, server: RunningServer, trained: dict[str, Any]
) -> None:
    x = np.nan_to_num(X, nan=-1.0)  # JSON has no NaN
    response = _invoke(_sagemaker(server), case.name, x)
    (output,) = orjson.loads(response["Body"].read())["outputs"]
    assert (output["name"], output["datatype"]) == ("output__0", "FP32")
    out = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(out, case.expected(trained[case.name], x), rtol=1e-5, atol=1e-6)


def test_wrong_feature_count_is_a_clear_400(
    client: triton.InferenceServerClient, server: RunningServer
) -> None:
    short = np.zeros((2, FEATURES - 1), np.float32)
    with pytest.raises(InferenceServerException) as info:
        _infer(client, "xgb_json_multiclass", short)
    assert info.value.status() == "400"
    assert f"Expected [-1,{FEATURES}], got [2,{FEATURES - 1}]" in info.value.message()
    runtime = _sagemaker(server)
    with pytest.raises(runtime.exceptions.ModelError) as sm:
        _invoke(runtime, "lgb_regression", short)
    assert sm.value.response["OriginalStatusCode"] == 400
    assert "unexpected shape for input 'input__0'" in sm.value.response["OriginalMessage"]


def test_the_config_is_served_as_written(client: triton.InferenceServerClient) -> None:
    _infer(client, "lgb_binary_proba1", X[:1])
    config = client.get_model_config("lgb_binary_proba1")
    assert config["backend"] == "fil"
    assert config["parameters"]["model_type"] == {"string_value": "lightgbm"}
    assert [o["dims"] for o in config["output"]] == [[1]]


# -- optional libraries that are not installed ------------------------------------------------


def _blocked_server(repo: Path, tmp_path: Path, blocked: str, args: list[str]) -> Any:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": str(hook), "FIL_TEST_BLOCK": blocked}
    return running_server(repo, args, env=env)


def _subset(repo: Path, trained: dict[str, Any], names: list[str]) -> Path:
    repo.mkdir()
    for name in names:
        BY_NAME[name].write(repo, trained[name])
    return repo


def test_a_missing_extra_is_a_load_error_naming_the_pip_install(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    names = ["xgb_json_multiclass", "xgb_legacy_binary", "skl_rf_multiclass", "lgb_binary"]
    repo = _subset(tmp_path / "repo", trained, names)
    with (
        _blocked_server(repo, tmp_path, "xgboost,treelite", []) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        body = {
            "inputs": [
                {"name": "input__0", "datatype": "FP32", "shape": [1, FEATURES], "data": [0.5] * 6}
            ]
        }
        wants = {
            "xgb_json_multiclass": "pip install 'modelyard[xgboost]'",
            "xgb_legacy_binary": "pip install 'modelyard[treelite]'",
            "skl_rf_multiclass": "pip install 'modelyard[treelite]'",
        }
        for name, hint in wants.items():
            response = http.post(f"/v2/models/{name}/infer", json=body)
            assert response.status_code >= 400
            assert hint in response.json()["error"], response.text
        index = {row["name"]: row for row in http.post("/v2/repository/index").json()}
        for name, hint in wants.items():
            assert index[name]["state"] == "UNAVAILABLE"
            assert hint in index[name]["reason"]
        assert "legacy binary" in index["xgb_legacy_binary"]["reason"]
        # models whose library is there are unaffected
        case = BY_NAME["lgb_binary"]
        x = np.nan_to_num(X, nan=0.5)
        ok = http.post(
            "/v2/models/lgb_binary/infer",
            json={
                "inputs": [
                    {
                        "name": "input__0",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "data": x.ravel().tolist(),
                    }
                ]
            },
        )
        assert ok.status_code == 200, ok.text
        out = np.array(ok.json()["outputs"][0]["data"], np.float32).reshape(-1, 1)
        np.testing.assert_array_equal(out, case.expected(trained["lgb_binary"], x))
        assert "Traceback" not in server.output()


def test_a_missing_extra_does_not_stop_a_server_that_loads_everything_at_start(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    repo = _subset(tmp_path / "repo", trained, ["xgb_json_multiclass", "lgb_binary"])
    args = ["--model-control-mode=none"]
    with (
        _blocked_server(repo, tmp_path, "xgboost,treelite", args) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        index = {row["name"]: row for row in http.post("/v2/repository/index").json()}
        assert index["lgb_binary"]["state"] == "READY"
        assert index["xgb_json_multiclass"]["state"] == "UNAVAILABLE"
        assert "pip install 'modelyard[xgboost]'" in index["xgb_json_multiclass"]["reason"]
        assert http.get("/v2/models/xgb_json_multiclass/ready").status_code == 400


def test_without_xgboost_its_models_run_on_treelite(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    names = ["xgb_legacy_binary", "xgb_json_proba", "xgb_ubj_threshold", "lgb_multiclass_proba"]
    repo = _subset(tmp_path / "repo", trained, names)
    with _blocked_server(repo, tmp_path, "xgboost,lightgbm", []) as server:
        client = triton.InferenceServerClient(server.url)
        try:
            for name in names:
                expected = BY_NAME[name].expected(trained[name], X)
                np.testing.assert_allclose(_infer(client, name, X), expected, rtol=1e-5, atol=1e-6)
        finally:
            client.close()
        for name in names:
            assert (
                f"model '{name}' ({BY_NAME[name].model_type}) runs on treelite" in server.output()
            )
