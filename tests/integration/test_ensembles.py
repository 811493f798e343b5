"""Ensembles through a real server: Triton's recorded answers replayed, an ONNX pipeline through
tritonclient and boto3, and broken ensembles refused with Triton's words.

* ``ensemble_models/`` (Python models ``scale`` v1/v2, ``add_sub``, ``check``, the decoupled
  ``repeat``, ensembles over them, and broken ensembles) is served as Triton served it when
  ``fixtures/record_triton_ensemble.py`` recorded ``fixtures/triton_ensemble.json``; the
  recorded requests are replayed in order and the answers compared (DIFFERENT says where
  modelyard answers otherwise on purpose).
* ``pipeline`` is the users' chain: a Python pre-processing step, an ONNX network (two
  versions; the ensemble pins the older) and a Python post-processing step.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest
import tritonclient.http as triton
from botocore.config import Config

from modelyard.testing import RunningServer, running_server
from tests.factories.onnx_models import mlp, write_model
from tests.factories.python_models import write_python_model

HERE = Path(__file__).parent
MODELS = HERE / "ensemble_models"
RECORDING: dict[str, Any] = json.loads((HERE / "fixtures" / "triton_ensemble.json").read_text())
CASES: list[dict[str, Any]] = RECORDING["cases"]
REASONS: dict[str, str] = RECORDING["log_reasons"]

# Triton's ensemble responses carry each step's internal sequence parameters (sequence_id 0,
# sequence_start/end false, repeated once per step that produced an output); modelyard's carry
# only what the steps' models set on their responses: those three are not compared
SEQUENCE_PARAMETERS = {"sequence_id", "sequence_start", "sequence_end"}
# case name -> why modelyard answers differently on purpose
DIFFERENT: dict[str, str] = {
    "fanout_unknown_input": (
        "Triton 2.51's message for an unknown extra input is garbled ('missing required "
        "input(s) ]'); modelyard names the unknown input (as for every model)"
    ),
    "checked_stats": (
        "Triton counts each failed ensemble request twice in 'fail' (4 for 2 failures); "
        "modelyard once"
    ),
}
# After a step answered an empty tensor (fanout_empty_tensor: scale version 1 on X of shape
# [0]), Triton ran neither of the steps that read it, yet answered their outputs, empty;
# modelyard runs every step, so these count one more request than Triton's (checked here).
ONE_MORE = {("scale", "2"), ("add_sub", "1")}
# the manager does not yet load composing models with their ensemble nor check them against
# it (repository.composing_models / composing_fault, docs/ensembles.md): those loads succeed
COMPOSING_STAGE = {n for n in RECORDING["broken"] if n in REASONS}
COMPOSING_STAGE -= {
    c["name"].removeprefix("load_")
    for c in CASES
    if c["name"].startswith("load_bad_") and c["response"]["status"] == 500
}
COMPOSING_STAGE.discard("bad_version_negative")  # refused by the config alone here


# -- the repository --------------------------------------------------------------------------

PRE = '''import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """RAW -> NORM: each row scaled to zero mean and unit variance."""

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "RAW").as_numpy()
            mean = raw.mean(axis=1, keepdims=True)
            std = raw.std(axis=1, keepdims=True) + 1e-6
            norm = ((raw - mean) / std).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("NORM", norm)]))
        return responses
'''
POST = '''import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """LOGITS -> PROBS (softmax) and LABEL (argmax); LOGITS above 1e6 are refused."""

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "LOGITS").as_numpy()
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
            label = probs.argmax(axis=1).astype(np.int64).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("PROBS", probs), pb_utils.Tensor("LABEL", label)]))
        return responses
'''


def _python_config(name: str, inputs: str, outputs: str) -> str:
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 8\n'
        f"input [ {inputs} ]\noutput [ {outputs} ]\n"
        "instance_group [ { kind: KIND_CPU, count: 1 } ]\n"
    )


NET = """name: "net"
backend: "onnxruntime"
max_batch_size: 8
version_policy: { all: {} }
input [ { name: "INPUT", data_type: TYPE_FP32, dims: [ 8 ] } ]
output [ { name: "OUTPUT", data_type: TYPE_FP32, dims: [ 3 ] } ]
"""
PIPELINE = """name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [ { name: "RAW", data_type: TYPE_FP32, dims: [ 8 ] } ]
output [
  { name: "PROBS", data_type: TYPE_FP32, dims: [ 3 ] },
  { name: "LABEL", data_type: TYPE_INT64, dims: [ 1 ] }
]
ensemble_scheduling {
  step [
    { model_name: "pre", model_version: -1,
      input_map { key: "RAW", value: "RAW" }, output_map { key: "NORM", value: "norm" } },
    { model_name: "net", model_version: 1,
      input_map { key: "INPUT", value: "norm" }, output_map { key: "OUTPUT", value: "logits" } },
    { model_name: "post", model_version: -1,
      input_map { key: "LOGITS", value: "logits" },
      output_map [ { key: "PROBS", value: "PROBS" }, { key: "LABEL", value: "LABEL" } ] }
  ]
}
"""
NET_V1, NET_V2 = mlp((8, 16, 3), seed=1), mlp((8, 16, 3), seed=2)


def build_pipeline(repo: Path) -> None:
    fp32 = "data_type: TYPE_FP32, dims: [ {} ]"
    write_python_model(
        repo,
        "pre",
        PRE,
        _python_config(
            "pre", f'{{ name: "RAW", {fp32.format(8)} }}', f'{{ name: "NORM", {fp32.format(8)} }}'
        ),
    )
    write_python_model(
        repo,
        "post",
        POST,
        _python_config(
            "post",
            f'{{ name: "LOGITS", {fp32.format(3)} }}',
            f'{{ name: "PROBS", {fp32.format(3)} }}, '
            '{ name: "LABEL", data_type: TYPE_INT64, dims: [ 1 ] }',
        ),
    )
    write_model(repo, "net", NET_V1, NET, version=1)
    write_model(repo, "net", NET_V2, None, version=2)
    (repo / "pipeline" / "1").mkdir(parents=True)
    (repo / "pipeline" / "config.pbtxt").write_text(PIPELINE)


def expected_pipeline(raw: np.ndarray[Any, Any], net: bytes = NET_V1) -> tuple[Any, Any]:
    norm = (raw - raw.mean(axis=1, keepdims=True)) / (raw.std(axis=1, keepdims=True) + 1e-6)
    session = ort.InferenceSession(net, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"INPUT": norm.astype(np.float32)})
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    return probs, probs.argmax(axis=1).reshape(-1, 1)


def copy_models(repo: Path) -> None:
    shutil.copytree(MODELS, repo, ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("ensembles") / "ensemble_models"
    copy_models(repo)
    build_pipeline(repo)
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    # on demand: each ensemble loads (with its steps) at its first request, as the recording's
    # explicit loads did
    with running_server(repo, ["--model-control-mode", "on-demand"]) as s:
        yield s


# -- Triton's answers, replayed -------------------------------------------------------------

VOLATILE = {"ns", "last_inference"}


def normalise(obj: Any, repository: str) -> Any:
    if isinstance(obj, dict):
        return {k: 0 if k in VOLATILE else normalise(v, repository) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normalise(v, repository) for v in obj]
    if isinstance(obj, str):
        return obj.replace(repository, "<REPOSITORY>")
    return obj


def comparable(body: Any, repository: str) -> Any:
    body = normalise(body, repository)
    if isinstance(body, str) and body.startswith("data: "):  # server-sent events
        events = [json.loads(e.removeprefix("data: ")) for e in body.split("\n\n") if e]
        return [{k: v for k, v in e.items() if k not in SEQUENCE_PARAMETERS} for e in events]
    if isinstance(body, dict) and "outputs" in body:
        # Triton answers an ensemble's outputs in name order, modelyard in the config's
        body["outputs"] = sorted(body["outputs"], key=lambda o: o["name"])
        parameters = body.pop("parameters", {})
        parameters = {k: v for k, v in parameters.items() if k not in SEQUENCE_PARAMETERS}
        if parameters:
            body["parameters"] = parameters
    return body


def one_more(body: Any) -> Any:
    """Triton's statistics plus one executed request of batch 1 for the ONE_MORE versions."""
    for stats in body.get("model_stats", []) if isinstance(body, dict) else []:
        if (stats["name"], stats["version"]) not in ONE_MORE:
            continue
        stats["inference_count"] += 1
        stats["execution_count"] += 1
        for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            stats["inference_stats"][key]["count"] += 1
        for key in ("compute_input", "compute_infer", "compute_output"):
            stats["batch_stats"][0][key]["count"] += 1
    return body


def send(client: httpx.Client, case: dict[str, Any]) -> httpx.Response:
    req = case["request"]
    content = None if req["body"] is None else json.dumps(req["body"]).encode()
    headers = {"Content-Type": "application/json"} if content else {}
    return client.request(req["method"], req["path"], content=content, headers=headers)


REPLAYED = [
    c for c in CASES if not c["name"].startswith(("load_", "index_")) and c["name"] not in DIFFERENT
]


def test_recorded_answers_replay(server: RunningServer, repo: Path) -> None:
    """In Triton's order on a fresh server (statistics count what came before)."""
    mismatches = []
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for case in REPLAYED:
            r = send(client, case)
            want = case["response"]
            got_body: Any = r.text
            if want["body_kind"] == "json":
                got_body = r.json() if r.content else None
            expected = one_more(comparable(want["body"], RECORDING["repository"]))
            got = comparable(got_body, str(repo))
            if r.status_code != want["status"] or got != expected:
                mismatches.append((case["name"], r.status_code, got, want["status"], expected))
    assert not mismatches, "\n\n".join(str(m) for m in mismatches)


def test_deliberate_differences(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        unknown = next(c for c in CASES if c["name"] == "fanout_unknown_input")
        r = send(client, unknown)
        assert r.status_code == 400
        assert (
            r.json()["error"]
            == "[request id: <id_unknown>] unexpected inference input 'Q' for model 'fanout'"
        )
        bad = {"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [-1]}]}
        stats = client.get("/v2/models/checked/stats").json()["model_stats"][0]
        before = stats["inference_stats"]["fail"]["count"]
        assert client.post("/v2/models/checked/infer", json=bad).status_code == 500
        stats = client.get("/v2/models/checked/stats").json()["model_stats"][0]
        assert stats["inference_stats"]["fail"]["count"] == before + 1


# -- the pipeline: Python -> ONNX (pinned) -> Python ------------------------------------------

RAW = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)


def test_pipeline_through_tritonclient(server: RunningServer) -> None:
    client = triton.InferenceServerClient(f"{server.host}:{server.port}")
    raw = triton.InferInput("RAW", list(RAW.shape), "FP32")
    raw.set_data_from_numpy(RAW, binary_data=True)
    result = client.infer("pipeline", [raw], request_id="p-1")
    probs, label = expected_pipeline(RAW)
    np.testing.assert_allclose(result.as_numpy("PROBS"), probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("LABEL"), label)
    assert result.get_response()["id"] == "p-1"
    assert result.get_response()["model_version"] == "1"
    # the pinned network is version 1 although version 2 is the newest
    other, _ = expected_pipeline(RAW, NET_V2)
    assert not np.allclose(result.as_numpy("PROBS"), other)
    only = client.infer("pipeline", [raw], outputs=[triton.InferRequestedOutput("LABEL")])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["LABEL"]
    metadata = client.get_model_metadata("pipeline")
    assert metadata["platform"] == "ensemble"
    assert [i["name"] for i in metadata["inputs"]] == ["RAW"]
    client.close()


def test_pipeline_through_sagemaker_invoke_endpoint(server: RunningServer) -> None:
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.base_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),
    )
    body = {
        "inputs": [
            {"name": "RAW", "datatype": "FP32", "shape": [4, 8], "data": RAW.ravel().tolist()}
        ]
    }
    response = runtime.invoke_endpoint(
        EndpointName="modelyard",
        TargetModel="pipeline.tar.gz",
        Body=orjson.dumps(body),
        ContentType="application/json",
    )
    doc = orjson.loads(response["Body"].read())
    outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in doc["outputs"]}
    probs, label = expected_pipeline(RAW)
    np.testing.assert_allclose(outputs["PROBS"], probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["LABEL"], label)


def test_composing_models_count_their_own_statistics(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:

        def count(model: str, version: str) -> int:
            stats = client.get(f"/v2/models/{model}/versions/{version}/stats").json()
            return int(stats["model_stats"][0]["inference_count"])

        before = {m: count(*m) for m in (("pipeline", "1"), ("net", "1"), ("net", "2"))}
        body = {
            "inputs": [{"name": "RAW", "datatype": "FP32", "shape": [2, 8], "data": [0.5] * 16}]
        }
        assert client.post("/v2/models/pipeline/infer", json=body).status_code == 200
        after = {m: count(*m) for m in before}
        # the ensemble counts the request; the pinned network its batch of 2; version 2 nothing
        assert after[("pipeline", "1")] - before[("pipeline", "1")] == 2
        assert after[("net", "1")] - before[("net", "1")] == 2
        assert after[("net", "2")] == before[("net", "2")]


def test_a_failing_step_names_the_ensemble_and_keeps_its_status(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        wrong = {
            "inputs": [{"name": "RAW", "datatype": "FP32", "shape": [1, 8], "data": [0.0] * 8}]
        }
        ok = client.post("/v2/models/pipeline/infer", json=wrong)
        assert ok.status_code == 200  # all-equal rows normalise to zeros: a valid input
        r = client.post(
            "/v2/models/checked/infer",
            json={"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", "data": [1, -1]}]},
        )
        assert (r.status_code, r.json()) == (
            500,
            {"error": "in ensemble 'checked', check: negative input"},
        )


# -- loads: broken ensembles refused with Triton's words ------------------------------------


@pytest.fixture(scope="module")
def explicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("explicit") / "ensemble_models"
    copy_models(repo)
    with running_server(repo, ["--model-control-mode", "explicit"]) as s:
        yield s


STATIC = sorted(set(REASONS) - COMPOSING_STAGE)


@pytest.mark.parametrize("name", STATIC)
def test_a_broken_ensemble_is_refused_with_tritons_reason(
    explicit: RunningServer, name: str
) -> None:
    r = httpx.post(f"{explicit.base_url}/v2/repository/models/{name}/load", timeout=30)
    assert r.status_code == 400
    assert REASONS[name] in r.json()["error"]


@pytest.mark.parametrize("name", sorted(COMPOSING_STAGE))
def test_an_ensemble_is_refused_when_its_composing_models_do_not_fit(
    explicit: RunningServer, name: str
) -> None:
    r = httpx.post(f"{explicit.base_url}/v2/repository/models/{name}/load", timeout=30)
    assert r.status_code == 400
    error = r.json()["error"]
    if name == "bad_decoupled_mix":
        # Triton names a step model picked by its hash order; modelyard's choice is stable
        head, tail = REASONS[name].split("step of model ")
        assert error.endswith(tail.split("'", 2)[2]) and head in error
        return
    assert REASONS[name] in error


def test_a_composing_model_missing_from_the_repository_fails_the_ensemble_by_name(
    server: RunningServer,
) -> None:
    """On demand, the ensemble loads with its steps at its first request: the missing one
    fails that load, in Triton's words, and nothing else."""
    body = {"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [1]}]}
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        r = client.post("/v2/models/bad_missing_model/infer", json=body)
        assert r.status_code == 400
        assert r.json()["error"].endswith("not available or ambiguous: nosuchmodel")
        assert client.post("/v2/models/fanout/infer", json=body).status_code == 200
