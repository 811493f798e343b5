"""The deploy loop for an ensemble (two Python steps and an ONNX network, one pinned): package
one bundle -> `modelyard test` it (its steps split out into the test store; a wrong
expectation fails) -> push to an S3 staging store (moto's server): every model its own
artifact -> an on-demand server serves the ensemble from that store -> push again: nothing to
do -> promote to a folder store: the steps come along, the same bytes as each step packaged on
its own -> a step version changed under the same number refuses the whole push, nothing
published. And an ensemble of an ensemble: tested, and pushed as a bundle of bundles.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelyard.cli.main import app
from modelyard.testing import running_server
from tests.factories.onnx_models import add_sub, write_model
from tests.integration.s3_server import MotoServer
from tests.unit.deploy.models import chain

STEP_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "X", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {{ name: "Y", data_type: TYPE_FP32, dims: [ 4 ] }} ]
"""

STEP_PY = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(
                "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() {op})])
            for r in requests
        ]
"""

NET_CONFIG = """name: "net"
backend: "onnxruntime"
max_batch_size: 0
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] },
  { name: "INPUT1", data_type: TYPE_FP32, dims: [ 4 ] }
]
output [
  { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 4 ] },
  { name: "OUTPUT1", data_type: TYPE_FP32, dims: [ 4 ] }
]
"""

# RESULT = (2 * RAW + RAW) + 1: pre doubles, net (ONNX, pinned to version 1) adds RAW, post +1
PIPELINE_CONFIG = """name: "pipeline"
platform: "ensemble"
max_batch_size: 0
input [ { name: "RAW", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "RESULT", data_type: TYPE_FP32, dims: [ 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "pre", model_version: -1,
      input_map { key: "X", value: "RAW" }, output_map { key: "Y", value: "doubled" } },
    { model_name: "net", model_version: 1,
      input_map [ { key: "INPUT0", value: "doubled" }, { key: "INPUT1", value: "RAW" } ],
      output_map { key: "OUTPUT0", value: "tripled" } },
    { model_name: "post", model_version: -1,
      input_map { key: "X", value: "tripled" }, output_map { key: "Y", value: "RESULT" } }
  ]
}
"""

PIPELINE_CASES = """cases:
  - name: three times plus one
    inputs: {RAW: [1, 2, 3, 4]}
    outputs: {RESULT: [4, 7, 10, 13]}
"""

PRE_CASES = """cases:
  - name: doubles
    inputs: {X: [1, 2, 3, 4]}
    outputs: {Y: [2, 4, 6, 8]}
"""

STEPS = ("pre_1.tar.gz", "net_1.tar.gz", "post_1.tar.gz")

runner = CliRunner()


def cli(*args: str, ok: bool = True) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    if ok and result.exit_code != 0:
        pytest.fail(f"modelyard {' '.join(args)} exited {result.exit_code}:\n{result.output}")
    if not ok and result.exit_code == 0:
        pytest.fail(f"modelyard {' '.join(args)} should have failed:\n{result.output}")
    return result.output


def python_step(models: Path, name: str, op: str) -> Path:
    folder = models / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(STEP_CONFIG.format(name=name))
    (folder / "1" / "model.py").write_text(STEP_PY.format(op=op))
    return folder


def write_models(models: Path) -> Path:
    pre = python_step(models, "pre", "* 2")
    (pre / "tests").mkdir()
    (pre / "tests" / "cases.yaml").write_text(PRE_CASES)
    python_step(models, "post", "+ 1")
    write_model(models, "net", add_sub(dims=[4]), NET_CONFIG, version=1)
    write_model(models, "net", add_sub(dims=[4], output_names=("OUTPUT1", "OUTPUT0")), None, 2)
    pipeline = models / "pipeline"
    (pipeline / "1").mkdir(parents=True)
    (pipeline / "tests").mkdir()
    (pipeline / "config.pbtxt").write_text(PIPELINE_CONFIG)
    (pipeline / "tests" / "cases.yaml").write_text(PIPELINE_CASES)
    return pipeline


def infer(base_url: str) -> Any:
    body = {"inputs": [{"name": "RAW", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}
    response = httpx.post(f"{base_url}/v2/models/pipeline/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["outputs"][0]["data"]


def test_an_ensemble_through_the_loop(
    tmp_path: Path,
    moto_server: MotoServer,
    s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    models = tmp_path / "models"
    pipeline = write_models(models)
    staging = f"s3://{moto_server.host_port}/{bucket}/staging"
    production = tmp_path / "production"
    production.mkdir()

    # package: one bundle, with the pinned version of net only
    out = cli("package", str(pipeline), "--output", "dist")
    assert "dist/pipeline_1.tar.gz" in out
    bundle = tmp_path / "dist" / "pipeline_1.tar.gz"
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert "net/1/model.onnx" in names and "net/2" not in names
    assert {"pre/1/model.py", "post/1/model.py", "pipeline/config.pbtxt"} <= set(names)

    # test the bundle: the ensemble and its steps load from their own artifacts, cases pass
    out = cli("test", str(bundle), "--write-sha256", "tested.sha256")
    for line in ("pipeline 1 loads", "pre 1 loads (in pipeline_1.tar.gz", "net 1 loads"):
        assert line in out, out
    assert "three times plus one" in out and "doubles" in out
    assert "6 passed, 0 failed" in out, out
    tested = Path("tested.sha256").read_text().split()[0]

    # a wrong expectation fails the test
    cases = pipeline / "tests" / "cases.yaml"
    cases.write_text(PIPELINE_CASES.replace("13]", "14]"))
    cli("package", str(pipeline), "--output", "bad")
    out = cli("test", "bad/pipeline_1.tar.gz", ok=False)
    assert "RESULT differ" in out and "1 failed" in out, out
    cases.write_text(PIPELINE_CASES)

    # push to S3 staging: each model its own artifact, the bundle as tested; a server serves it
    out = cli("push", str(bundle), "--to", staging, "--sha256", tested)
    assert "pipeline_1.tar.gz ->" in out
    for key in STEPS:
        assert f"{key} ->" in out, out
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="staging/")["Contents"]
    keys = sorted(o["Key"].removeprefix("staging/") for o in listed)
    assert keys == sorted(k + s for k in (*STEPS, "pipeline_1.tar.gz") for s in ("", ".sha256"))
    with running_server(staging, ["--repository-poll-secs", "0"]) as server:  # on-demand
        assert infer(server.base_url) == [4, 7, 10, 13]

    # the same bundle again: nothing to do, for every artifact
    out = cli("push", str(bundle), "--to", staging)
    assert out.count("nothing to do") == 4, out

    # promote: the steps come along, the same bytes as each step packaged on its own
    out = cli("promote", "pipeline", "1", "--from", staging, "--to", str(production),
              "--sha256", tested)  # fmt: skip
    assert all(f"{key} ->" in out for key in STEPS), out
    cli("package", str(models / "pre"), "--output", "alone")
    assert (production / "pre_1.tar.gz").read_bytes() == Path("alone/pre_1.tar.gz").read_bytes()
    assert "nothing to do" in cli("push", "alone/pre_1.tar.gz", "--to", str(production))

    # pre's version 1 changed under the same number: the whole push is refused, in both stores
    code = models / "pre" / "1" / "model.py"
    code.write_text(code.read_text() + "# changed\n")
    cli("package", str(pipeline), "--version", "2", "--output", "v2")
    before = sorted(p.name for p in production.iterdir())
    for store in (str(production), staging):
        out = cli("push", "v2/pipeline_2.tar.gz", "--to", store, ok=False)
        assert "'pre_1.tar.gz' (in pipeline_2.tar.gz" in out and "nothing was published" in out
        assert "versions are immutable" in out
    assert sorted(p.name for p in production.iterdir()) == before
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="staging/")["Contents"]
    assert sorted(o["Key"].removeprefix("staging/") for o in listed) == keys


def test_an_ensemble_of_an_ensemble(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    models = tmp_path / "models"
    for name, op in (("a", "* 2"), ("b", "+ 1"), ("c", "* 10")):
        python_step(models, name, op)
    chain(models, "inner", [("a", 1), ("b", 1)])
    outer = chain(models, "outer", [("inner", 1), ("c", 1)])
    (outer / "tests").mkdir()
    (outer / "tests" / "cases.yaml").write_text(
        "cases:\n  - inputs: {RAW: [1, 2, 3, 4]}\n    outputs: {RESULT: [30, 50, 70, 90]}\n"
    )
    cli("package", str(outer), "--output", "dist")
    out = cli("test", "dist/outer_1.tar.gz")
    assert "inner 1 loads (in outer_1.tar.gz, run by 'outer')" in out
    assert "a 1 loads (in outer_1.tar.gz, run by 'inner')" in out
    assert "6 passed, 0 failed" in out, out
    store = tmp_path / "store"
    store.mkdir()
    out = cli("push", "dist/outer_1.tar.gz", "--to", str(store))
    published = sorted(p.name for p in store.glob("*.tar.gz"))
    assert published == [f"{m}_1.tar.gz" for m in ("a", "b", "c", "inner", "outer")]
    with tarfile.open(store / "inner_1.tar.gz") as tar:  # a bundle of its own
        assert {"a/1/model.py", "b/1/model.py", "inner/config.pbtxt"} <= set(tar.getnames())
