"""The example pipeline (examples/screen_detection_pipeline), served as shipped and checked
end to end against the same steps computed in this process, through tritonclient.http and
SageMaker's invoke API; its generated files rebuild byte for byte."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnxruntime as ort
import orjson
import pytest
import tritonclient.http as triton_http
from botocore.config import Config

from modelyard.testing import RunningServer, running_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "screen_detection_pipeline"
REPO = EXAMPLE / "repository"


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_rebuild_byte_for_byte(tmp_path: Path) -> None:
    build = _load(EXAMPLE / "build.py", "example_build")
    build.build(tmp_path)
    for rel in (
        "repository/screen_detection_inferencer/1/model.onnx",
        "wheels/screen_preprocessing-1.0.0-py3-none-any.whl",
    ):
        assert (tmp_path / rel).read_bytes() == (EXAMPLE / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    args = [
        "--python-env-find-links",
        str(EXAMPLE / "wheels"),
        "--python-env-no-index",
    ]
    with running_server(REPO, args, timeout=120) as srv:
        yield srv


def _expected(images: np.ndarray) -> dict[str, np.ndarray]:
    """The pipeline computed here: the team's package, onnxruntime, the post-processing."""
    sys.path.insert(0, str(EXAMPLE / "packages"))
    try:
        prep = _load(EXAMPLE / "packages" / "screen_preprocessing" / "__init__.py", "sp_local")
    finally:
        sys.path.pop(0)
    batch = np.stack([prep.to_network_input(img) for img in images])
    session = ort.InferenceSession(
        str(REPO / "screen_detection_inferencer" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    raw = session.run(["RAW"], {"IMAGE": batch})[0]
    corners = 1 / (1 + np.exp(-raw[:, :4]))
    corners = np.concatenate(
        [np.minimum(corners[:, :2], corners[:, 2:]), np.maximum(corners[:, :2], corners[:, 2:])],
        axis=1,
    )
    h, w = images.shape[1:3]
    scores = 1 / (1 + np.exp(-raw[:, 4:5]))
    return {"BOX": corners * np.array([w, h, w, h]), "SCORE": scores}


IMAGES = np.random.default_rng(5).integers(0, 255, (2, 120, 160, 3), dtype=np.uint8)


def test_pipeline_through_tritonclient(server: RunningServer) -> None:
    client = triton_http.InferenceServerClient(server.url, network_timeout=120)
    inp = triton_http.InferInput("RAW_IMAGE", list(IMAGES.shape), "UINT8")
    inp.set_data_from_numpy(IMAGES, binary_data=True)
    result = client.infer("screen_detection_pipeline", [inp])
    want = _expected(IMAGES)
    np.testing.assert_allclose(result.as_numpy("BOX"), want["BOX"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(result.as_numpy("SCORE"), want["SCORE"], rtol=1e-4)
    labels = result.as_numpy("LABEL")
    assert labels.shape == (2, 1)
    assert [lab[0] for lab in labels] == [
        b"screen" if s >= 0.5 else b"no_screen" for s in want["SCORE"][:, 0]
    ]
    # every step served and counted as its own model too
    for model in ("preprocess", "screen_detection_inferencer", "postprocess"):
        stats = client.get_inference_statistics(model)["model_stats"][0]
        assert stats["inference_count"] >= 2


def test_pipeline_through_sagemaker_invoke(server: RunningServer) -> None:
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.base_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),
    )
    image = IMAGES[:1]
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "RAW_IMAGE",
                    "datatype": "UINT8",
                    "shape": list(image.shape),
                    "data": image.ravel().tolist(),
                }
            ]
        }
    )
    answer = runtime.invoke_endpoint(
        EndpointName="screens",
        TargetModel="screen_detection_pipeline",
        ContentType="application/json",
        Body=body,
    )
    doc = orjson.loads(answer["Body"].read())
    outputs = {o["name"]: o for o in doc["outputs"]}
    want = _expected(image)
    np.testing.assert_allclose(
        np.array(outputs["BOX"]["data"]).reshape(1, 4), want["BOX"], rtol=1e-4, atol=1e-3
    )
    assert outputs["LABEL"]["datatype"] == "BYTES"
