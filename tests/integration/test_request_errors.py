"""Inference errors counted by reason on ``/metrics`` (``modelyard_request_errors_total``),
through both protocols, with the clients users have (httpx for v2, boto3 for SageMaker);
failed loads per model; the per-model cache split."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from prometheus_client.parser import text_string_to_metric_families

from modelyard.testing import RunningServer, running_server
from tests.factories.onnx_models import mlp, write_model
from tests.integration.test_on_demand import _mlp_body

BODY = _mlp_body()
WRONG = {
    "inputs": [{"name": "NOT_AN_INPUT", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "mlp", mlp(), None)
    (repo / "corrupt" / "1").mkdir(parents=True)
    (repo / "corrupt" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    with running_server(repo) as s:
        yield s


def _counters(server: RunningServer, family: str) -> dict[tuple[str, ...], float]:
    text = httpx.get(f"{server.base_url}/metrics").text
    out: dict[tuple[str, ...], float] = {}
    for f in text_string_to_metric_families(text):
        if f.name == family:
            for s in f.samples:
                out[tuple(v for k, v in sorted(s.labels.items()))] = s.value
    return out


def _runtime(server: RunningServer) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.base_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_errors_by_reason_through_v2_and_sagemaker(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        assert http.post("/v2/models/mlp/infer", json=BODY).status_code == 200
        assert http.post("/v2/models/mlp/infer", json=WRONG).status_code == 400
        assert http.post("/v2/models/mlp/infer", content=b"{not json").status_code == 400
        assert http.post("/v2/models/made_up_1/infer", json=BODY).status_code == 404
        assert http.post("/v2/models/made_up_2/infer", json=BODY).status_code == 404
        assert http.post("/v2/models/corrupt/infer", json=BODY).status_code == 400
        # not inference: errors on other routes are not requests that failed
        assert http.get("/v2/models/made_up_3").status_code == 404
        assert http.post("/v2/repository/models/made_up_4/unload").status_code in (400, 404)
    runtime = _runtime(server)
    with pytest.raises(runtime.exceptions.ModelError):
        runtime.invoke_endpoint(
            EndpointName="e", TargetModel="mlp_1.tar.gz", Body=b'{"inputs": []}'
        )
    with pytest.raises(runtime.exceptions.ValidationError):
        runtime.invoke_endpoint(EndpointName="e", TargetModel="made_up_5_1.tar.gz", Body=b"{}")
    errors = _counters(server, "modelyard_request_errors")
    # labels sorted by name: (model, reason); unknown names carry no model
    assert errors == {
        ("mlp", "invalid_request"): 3,
        ("", "model_not_found"): 3,
        ("corrupt", "load_failed"): 1,
    }
    assert _counters(server, "modelyard_model_load_failures") == {("corrupt",): 1}
    lookups = _counters(server, "modelyard_model_cache_lookups")
    # the first request loaded mlp (a miss); the two bad v2 ones and the bad SageMaker one hit
    assert lookups[("mlp", "miss")] == 1
    assert lookups[("mlp", "hit")] == 3
    assert lookups[("corrupt", "miss")] == 1
    totals = (
        _counters(server, "modelyard_model_cache_hits"),
        _counters(server, "modelyard_model_cache_misses"),
    )
    assert (totals[0][()], totals[1][()]) == (
        sum(v for (_, result), v in lookups.items() if result == "hit"),
        sum(v for (_, result), v in lookups.items() if result == "miss"),
    )


def test_grpc_errors_count_with_the_same_reasons(tmp_path: Any) -> None:
    """One data plane, one set of counters: a failed ModelInfer or stream request counts
    under the same reason as over HTTP, and the v2 request that follows it adds to it."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    write_model(tmp_path, "mlp", mlp(), None)
    with running_server(tmp_path) as s:
        client = grpcclient.InferenceServerClient(s.grpc_url)
        good = grpcclient.InferInput("INPUT", [1, 64], "FP32")
        good.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
        assert client.infer("mlp", [good]).get_response().outputs
        wrong = grpcclient.InferInput("NOT_AN_INPUT", [1, 64], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
        with pytest.raises(InferenceServerException):
            client.infer("mlp", [wrong])
        with pytest.raises(InferenceServerException):
            client.infer("made_up", [good])
        client.close()
        with httpx.Client(base_url=s.base_url, timeout=60) as http:
            assert http.post("/v2/models/mlp/infer", json=WRONG).status_code == 400
        assert _counters(s, "modelyard_request_errors") == {
            ("mlp", "invalid_request"): 2,
            ("", "model_not_found"): 1,
        }
