"""Model names and file paths from the network, against a real server (issue 12.2, 13.3).

The server runs with its own ``TMPDIR`` (a folder of the test's, holding a sentinel file),
so the test sees every private folder a load with files makes, and that nothing else there
is touched. Requests go out through ``http.client``, which sends the path exactly as written:
``.`` and ``..`` are not folded away on the client side as browsers and httpx do.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient

from modelyard.errors import InvalidArgument
from modelyard.names import check_model_name, model_name_fault
from modelyard.testing import RunningServer, running_server
from tests.factories.onnx_models import mlp, write_model

# the server's flags for loads with files (off by default: docs/security.md)
LOAD_WITH_FILES_ARGS: list[str] = [
    "--model-control-mode",
    "explicit",
    "--allow-model-load-files",
    "true",
]

MLP_CONFIG = {
    "name": "placeholder",
    "platform": "onnxruntime_onnx",
    "max_batch_size": 8,
    "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [64]}],
    "output": [{"name": "OUTPUT", "data_type": "TYPE_FP32", "dims": [10]}],
}
TRAVERSAL = "must not contain path traversal characters"


@pytest.fixture(scope="module")
def tmpdir_(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("server-tmp")
    (folder / "sentinel").write_text("still here")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tmpdir_: Path) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "mlp", mlp(), None)
    with running_server(repo, LOAD_WITH_FILES_ARGS, env={"TMPDIR": str(tmpdir_)}) as s:
        yield s


def _request(
    server: RunningServer, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        payload = orjson.dumps(body) if body is not None else b""
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        return response.status, orjson.loads(raw) if raw else {}
    finally:
        conn.close()


def _files_load(
    name: str, files: dict[str, bytes], config_name: str | None = None
) -> dict[str, Any]:
    config = dict(MLP_CONFIG, name=config_name or name)
    parameters: dict[str, Any] = {"config": orjson.dumps(config).decode()}
    for key, data in files.items():
        parameters[key] = base64.b64encode(data).decode()
    return {"parameters": parameters}


def _leftovers(tmpdir_: Path) -> list[str]:
    return sorted(p.name for p in tmpdir_.iterdir() if p.name.startswith("modelyard-override-"))


@pytest.mark.parametrize(
    ("segment", "name"),
    [(".", "."), ("%2E", "."), ("..", ".."), ("%2E%2E", ".."), ("%2F", "/"), ("a%2Fb", "a/b")],
)
def test_path_names_are_refused_and_tmpdir_survives(
    server: RunningServer, tmpdir_: Path, segment: str, name: str
) -> None:
    """A load with files named ``.`` once removed $TMPDIR on its second try; ``..`` wrote
    into it. Now each is refused, twice over, and the folder is as it was."""
    body = _files_load(name, {"file:1/model.onnx": mlp(seed=3)}, config_name="x")
    for _ in range(2):
        status, doc = _request(server, "POST", f"/v2/repository/models/{segment}/load", body)
        assert status in (400, 404), doc
        if status == 400:
            assert TRAVERSAL in doc["error"]
        else:  # "/" decoded: the path has one more step and matches no route
            assert "/" in name
    for verb, path in (
        ("POST", f"/v2/models/{segment}/infer"),
        ("GET", f"/v2/models/{segment}"),
        ("POST", f"/v2/repository/models/{segment}/unload"),
    ):
        status, doc = _request(server, verb, path, {"inputs": []})
        assert status in (400, 404), (path, doc)
        assert "error" in doc
    assert (tmpdir_ / "sentinel").read_text() == "still here"
    assert _leftovers(tmpdir_) == []
    assert not (tmpdir_ / "1").exists()  # ".." wrote "<TMPDIR>/1/model.onnx"
    assert _request(server, "GET", "/v2/health/ready")[0] == 200


def test_an_infer_for_a_traversal_name_says_why(server: RunningServer) -> None:
    status, doc = _request(server, "POST", "/v2/models/%2E%2E/infer", {"inputs": []})
    assert status == 400
    assert doc["error"] == f"invalid model name '..', model name {TRAVERSAL}"
    status, doc = _request(server, "POST", "/v2/repository/models/%20/load")
    assert status == 400
    assert doc["error"] == "Model name cannot be empty. Please enter a valid name to deploy."


def test_a_failed_override_leaves_no_folder(server: RunningServer, tmpdir_: Path) -> None:
    """Refused paths and a load that fails both clean up the private folder they made."""
    for files in (
        {"file:../1/model.onnx": b"x"},
        {"file:/../1/model.onnx": b"x"},
        {"file:1/../../x": b"x"},
        {"file:/": b"x"},
        {"file:1/model.onnx": b"not an onnx model"},  # written, then the load fails
    ):
        status, doc = _request(
            server, "POST", "/v2/repository/models/broken/load", _files_load("broken", files)
        )
        assert status == 400, doc
        assert _leftovers(tmpdir_) == [], files
    assert (tmpdir_ / "sentinel").read_text() == "still here"


def test_a_leading_slash_is_the_model_folder(server: RunningServer, tmpdir_: Path) -> None:
    """Triton's ``file:/1/model.onnx``: relative to the model folder, as tritonclient sends."""
    client = httpclient.InferenceServerClient(f"{server.host}:{server.port}")
    config = orjson.dumps(dict(MLP_CONFIG, name="slashed")).decode()
    client.load_model("slashed", config=config, files={"file:/1/model.onnx": mlp(seed=4)})
    try:
        assert client.is_model_ready("slashed")
        inp = httpclient.InferInput("INPUT", [1, 64], "FP32")
        inp.set_data_from_numpy(np.ones((1, 64), np.float32))
        assert client.infer("slashed", [inp]).as_numpy("OUTPUT").shape == (1, 10)
        assert len(_leftovers(tmpdir_)) == 1  # its files, while it is loaded
        # a failed reload keeps the version serving, and its files
        with pytest.raises(httpclient.InferenceServerException, match="must stay within"):
            client.load_model("slashed", config=config, files={"file:/../x": b"x"})
        assert client.infer("slashed", [inp]).as_numpy("OUTPUT").shape == (1, 10)
        assert len(_leftovers(tmpdir_)) == 1
    finally:
        client.unload_model("slashed")  # its files go with it, as in Triton
        client.close()
    assert _leftovers(tmpdir_) == []
    assert not (tmpdir_ / "1").exists()


@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "/", "a\\b", "a\0b", "a\nb", "..\t"])
def test_names_refused(name: str) -> None:
    assert model_name_fault(name) is not None
    with pytest.raises(InvalidArgument):
        check_model_name(name)


@pytest.mark.parametrize("name", ["add_sub", "a.b", "...", ".hidden", "a b", "模型", "m-1_2"])
def test_names_accepted(name: str) -> None:
    assert check_model_name(name) == name
