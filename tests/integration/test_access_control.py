"""Access control against the real server process (docs/security.md).

* a default server accepts no code from the network: the load API's ``file:`` parameters are
  refused (403, nothing written, the uploaded ``initialize`` never runs) and so is a config
  override that points EXECUTION_ENV_PATH outside the repository;
* Triton's ``--http-restricted-api``: Triton's status and text on the v2 routes and on both
  SageMaker faces (tritonclient, httpx and boto3 as the clients);
* bearer tokens (``--auth-token-file``): 401 / 403 / 200 by role, probes open;
* the start-up log says where the server listens and what is open there.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from botocore.config import Config
from botocore.exceptions import ClientError
from tritonclient.utils import InferenceServerException

from modelyard.server.compose import build_server
from modelyard.settings import GrpcSettings, ServerSettings
from modelyard.testing import RunningServer, running_server
from modelyard.testing.server import ServerFailed, free_port, start_server
from tests.factories.onnx_models import add_sub, write_model
from tests.integration.conftest import ADD_SUB

# what an attacker uploads: initialize() leaves a marker, so a test can see whether it ran
MARKER_PY = """import numpy as np
import triton_python_backend_utils as pb_utils

MARKER = {marker!r}


class TritonPythonModel:
    def initialize(self, args):
        with open(MARKER, "w") as f:
            f.write("ran")

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("Y", np.zeros(1, np.float32))])
            for _ in requests
        ]
"""
MARKER_CONFIG = {
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [1]}],
    "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}],
}

# (tritonclient adds to the headers dict it is given: it gets copies)
ADMIN = {"admin-key": "s3cret"}
INFER_KEY = {"infer-key": "abc"}
MGMT_TOKEN = "mgmt-" + "m" * 27
INFER_TOKEN = "infer-" + "i" * 26
RESTRICTED = "This API is restricted, expecting header '{}'"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    return repo


def _get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=60, **kwargs)  # a loaded machine: no 5 s default


def _post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, timeout=60, **kwargs)


def _infer_body() -> dict[str, Any]:
    one = {"shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}
    return {"inputs": [{"name": "INPUT0", **one}, {"name": "INPUT1", **one}]}


def _triton_inputs() -> list[httpclient.InferInput]:
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = httpclient.InferInput(name, [1, 16], "FP32")
        inp.set_data_from_numpy(np.ones((1, 16), np.float32))
        inputs.append(inp)
    return inputs


def _boto3(server: RunningServer, headers: dict[str, str] | None = None) -> Any:
    """boto3's sagemaker-runtime client; ``headers`` are set after SigV4 signing (the
    ``before-send`` hook), the way a boto3 user sends a bearer token or a restricted
    header: signing writes its own ``Authorization``."""
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.base_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),
    )
    if headers:

        def add(request: Any, **_: Any) -> None:
            for key, value in headers.items():
                request.headers[key] = value

        client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", add)
    return client


def _invoke(client: Any) -> Any:
    return client.invoke_endpoint(
        EndpointName="ep",
        TargetModel="add_sub.tar.gz",
        Body=json.dumps(_infer_body()),
        ContentType="application/json",
    )


# -- no code from the network by default ---------------------------------------------------
def _upload(server: RunningServer, marker: Path, name: str = "evil") -> None:
    client = httpclient.InferenceServerClient(server.url)
    source = MARKER_PY.format(marker=str(marker)).encode()
    client.load_model(name, config=json.dumps(MARKER_CONFIG), files={"file:1/model.py": source})


def test_default_server_refuses_load_with_files(repository: Path, tmp_path: Path) -> None:
    """On-demand mode, no flags: the upload is refused before anything is written, and the
    uploaded initialize() never runs; loading a repository model stays allowed."""
    marker = tmp_path / "ran.txt"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with running_server(repository, env={"TMPDIR": str(tmp)}) as server:
        with pytest.raises(InferenceServerException) as info:
            _upload(server, marker)
        assert info.value.status() == "403"
        assert "--allow-model-load-files" in info.value.message()
        raw = _post(
            f"{server.base_url}/v2/repository/models/evil/load",
            json={"parameters": {"config": "{}", "file:1/model.py": "eA=="}},
        )
        assert raw.status_code == 403
        assert set(raw.json()) == {"error"}
        assert not marker.exists()
        assert not list(tmp.glob("modelyard-override-*"))  # nothing written
        names = [row["name"] for row in _post(f"{server.base_url}/v2/repository/index").json()]
        assert "evil" not in names
        # an environment from anywhere on the host, through a config override: refused too
        config = {"backend": "onnxruntime"}
        config["parameters"] = {"EXECUTION_ENV_PATH": {"string_value": str(tmp_path)}}
        r = _post(
            f"{server.base_url}/v2/repository/models/add_sub/load",
            json={"parameters": {"config": json.dumps(config)}},
        )
        assert r.status_code == 403
        assert "EXECUTION_ENV_PATH" in r.json()["error"]
        # what stays allowed: a repository model, with or without a plain config override
        assert _post(f"{server.base_url}/v2/repository/models/add_sub/load").status_code == 200
        r = _post(
            f"{server.base_url}/v2/repository/models/add_sub/load",
            json={"parameters": {"config": json.dumps({"max_batch_size": 4})}},
        )
        assert r.status_code == 200, r.text
        assert server.process.poll() is None


def test_load_with_files_when_enabled(repository: Path, tmp_path: Path) -> None:
    """The switch on, the same upload loads and runs: what the refusal above prevents."""
    marker = tmp_path / "ran.txt"
    with running_server(repository, ["--allow-model-load-files=true"]) as server:
        _upload(server, marker)
        assert marker.read_text() == "ran"
        output = server.output()
        assert "load with files ENABLED" in output
        # on 127.0.0.1 too: any local user could run code as the server
        assert "(load/unload, with uploaded files: code execution) is open to anyone" in output


# -- Triton's restricted API groups --------------------------------------------------------
@pytest.fixture(scope="module")
def restricted(repository: Path) -> Iterator[RunningServer]:
    port = free_port()
    args = [
        "--http-restricted-api=model-repository,statistics:admin-key=s3cret",
        "--http-restricted-api",
        "inference:infer-key=abc",
        "--allow-sagemaker=true",
        f"--sagemaker-port={port}",
    ]
    with running_server(repository, args) as s:
        s.sagemaker_port = port  # type: ignore[attr-defined]
        yield s


def test_restricted_v2_routes(restricted: RunningServer) -> None:
    with httpx.Client(base_url=restricted.base_url, timeout=30) as http:
        for method, path in [
            ("POST", "/v2/repository/index"),
            ("POST", "/v2/repository/models/add_sub/load"),
            ("POST", "/v2/repository/models/add_sub/unload"),
            ("GET", "/v2/models/stats"),
            ("GET", "/v2/models/add_sub/stats"),
            ("GET", "/v2/repository/index"),  # the restriction comes before the method
        ]:
            r = http.request(method, path)
            assert (r.status_code, r.json()) == (403, {"error": RESTRICTED.format("admin-key")})
            r = http.request(method, path, headers={"admin-key": "wrong"})
            assert r.status_code == 403
        assert http.post("/v2/repository/index", headers=ADMIN).status_code == 200
        assert http.get("/v2/models/stats", headers={"Admin-Key": "s3cret"}).status_code == 200
        r = http.post("/v2/models/add_sub/infer", json=_infer_body())
        assert (r.status_code, r.json()) == (403, {"error": RESTRICTED.format("infer-key")})
        r = http.post("/v2/models/add_sub/infer", json=_infer_body(), headers=ADMIN)
        assert r.status_code == 403  # one group's header does not open another
        assert http.post(
            "/v2/models/add_sub/infer", json=_infer_body(), headers=INFER_KEY
        ).is_success
        # the groups left open, as in Triton: health, metadata, model-config, /metrics
        for path in ("/v2/health/ready", "/v2", "/v2/models/add_sub", "/v2/models/add_sub/config"):
            assert http.get(path).status_code == 200, path
        assert http.get("/metrics").status_code == 200
    client = httpclient.InferenceServerClient(restricted.url)
    with pytest.raises(InferenceServerException, match="expecting header 'admin-key'"):
        client.get_model_repository_index()
    assert client.get_model_repository_index(headers=dict(ADMIN))
    assert (
        client.infer("add_sub", _triton_inputs(), headers=dict(INFER_KEY)).as_numpy("OUTPUT0")
        is not None
    )


def test_restricted_sagemaker_faces(restricted: RunningServer) -> None:
    port = restricted.sagemaker_port  # type: ignore[attr-defined]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as face:
        assert face.get("/ping").status_code == 200
        for method, path in [("GET", "/models"), ("POST", "/models"), ("GET", "/models/m")]:
            r = face.request(method, path)
            assert (r.status_code, r.json()) == (403, {"error": RESTRICTED.format("admin-key")})
        r = face.delete("/models/m")
        assert r.status_code == 403
        assert face.get("/models", headers=ADMIN).status_code == 200
        target = {"X-Amzn-SageMaker-Target-Model": "add_sub.tar.gz"}
        r = face.post("/invocations", json=_infer_body(), headers=target)
        assert (r.status_code, r.json()) == (403, {"error": RESTRICTED.format("infer-key")})
        r = face.post("/models/m/invoke", json=_infer_body())
        assert r.status_code == 403
        r = face.post("/invocations", json=_infer_body(), headers={**target, **INFER_KEY})
        assert r.status_code == 200, r.text
    with pytest.raises(ClientError) as info:
        _invoke(_boto3(restricted))
    error = info.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "AccessDeniedException"
    assert "expecting header 'infer-key'" in error["Error"]["Message"]
    assert _invoke(_boto3(restricted, INFER_KEY))["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_restricted_health_needs_its_header(repository: Path) -> None:
    """A restricted health group closes the probes too (Triton's behaviour); the harness
    polls readiness with the header it is given."""
    port = free_port()
    args = ["--http-restricted-api=health:probe-key=p", "--allow-sagemaker=true"]
    args += [f"--sagemaker-port={port}"]
    with running_server(repository, args, headers={"probe-key": "p"}) as server:
        r = _get(f"{server.base_url}/v2/health/live")
        assert (r.status_code, r.json()) == (403, {"error": RESTRICTED.format("probe-key")})
        assert _get(f"{server.base_url}/v2/models/add_sub/ready").status_code == 403
        assert _get(f"http://127.0.0.1:{port}/ping").status_code == 403
        assert _get(f"http://127.0.0.1:{port}/ping", headers={"probe-key": "p"}).is_success
        assert _post(f"{server.base_url}/v2/repository/index").status_code == 200


def test_malformed_restriction_is_refused_at_start(repository: Path) -> None:
    with pytest.raises(ServerFailed, match="unknown restricted api 'admin'"):
        start_server(repository, ["--http-restricted-api=admin:key=value"], timeout=30)


# -- bearer tokens -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokens(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    token_file = tmp_path_factory.mktemp("auth") / "tokens"
    token_file.write_text(f"# team tokens\nmanagement {MGMT_TOKEN}\ninference {INFER_TOKEN}\n")
    token_file.chmod(0o600)
    port = free_port()
    args = [f"--auth-token-file={token_file}", "--allow-sagemaker=true", f"--sagemaker-port={port}"]
    with running_server(repository, args) as s:
        s.sagemaker_port = port  # type: ignore[attr-defined]
        yield s


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_on_v2(tokens: RunningServer) -> None:
    with httpx.Client(base_url=tokens.base_url, timeout=30) as http:
        for path in ("/v2/health/live", "/v2/health/ready"):  # probes stay open
            assert http.get(path).status_code == 200
        r = http.post("/v2/models/add_sub/infer", json=_infer_body())
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="modelyard"'
        assert set(r.json()) == {"error"}
        r = http.post("/v2/models/add_sub/infer", json=_infer_body(), headers=_bearer("x" * 32))
        assert r.status_code == 401
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        for path in ("/v2", "/v2/models/add_sub", "/v2/models/add_sub/ready", "/metrics"):
            assert http.get(path).status_code == 401, path
        infer, mgmt = _bearer(INFER_TOKEN), _bearer(MGMT_TOKEN)
        assert http.post("/v2/models/add_sub/infer", json=_infer_body(), headers=infer).is_success
        for path in ("/v2", "/v2/models/add_sub", "/v2/models/add_sub/config", "/metrics"):
            assert http.get(path, headers=infer).status_code == 200, path
        r = http.post("/v2/repository/models/add_sub/unload", headers=infer)
        assert r.status_code == 403
        assert "management token" in r.json()["error"]
        assert http.post("/v2/repository/index", headers=infer).status_code == 403
        assert http.post("/v2/repository/models/add_sub/load", headers=mgmt).status_code == 200
        assert http.post("/v2/models/add_sub/infer", json=_infer_body(), headers=mgmt).is_success
        # the metrics port asks for a token too: it names every model
        assert tokens.metrics_port is not None
        metrics = f"http://127.0.0.1:{tokens.metrics_port}/metrics"
        assert _get(metrics).status_code == 401
        assert _get(metrics, headers=infer).status_code == 200
    client = httpclient.InferenceServerClient(tokens.url)
    assert client.is_server_ready()
    with pytest.raises(InferenceServerException, match="bearer token"):
        client.get_server_metadata()
    assert client.infer("add_sub", _triton_inputs(), headers=_bearer(INFER_TOKEN))


def test_tokens_on_sagemaker_faces(tokens: RunningServer) -> None:
    port = tokens.sagemaker_port  # type: ignore[attr-defined]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as face:
        assert face.get("/ping").status_code == 200
        target = {"X-Amzn-SageMaker-Target-Model": "add_sub.tar.gz"}
        r = face.post("/invocations", json=_infer_body(), headers=target)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = face.post(
            "/invocations", json=_infer_body(), headers={**target, **_bearer(INFER_TOKEN)}
        )
        assert r.status_code == 200, r.text
        r = face.post(
            "/models", json={"model_name": "m", "url": "/x"}, headers=_bearer(INFER_TOKEN)
        )
        assert r.status_code == 403
        assert face.get("/models", headers=_bearer(MGMT_TOKEN)).status_code == 200
    with pytest.raises(ClientError) as info:
        _invoke(_boto3(tokens))  # boto3's own SigV4 Authorization is no bearer token
    error = info.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 401
    assert error["Error"]["Code"] == "UnrecognizedClientException"
    reply = _invoke(_boto3(tokens, _bearer(INFER_TOKEN)))
    assert reply["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_the_same_gate_under_uvicorn(repository: Path, tmp_path: Path) -> None:
    """The ASGI application (``--http-server uvicorn``, both ports) goes through the gate."""
    token_file = tmp_path / "tokens"
    token_file.write_text(f"inference {INFER_TOKEN}\nmanagement {MGMT_TOKEN}\n")
    token_file.chmod(0o600)
    port = free_port()
    args = ["--http-server", "uvicorn", f"--auth-token-file={token_file}"]
    args += ["--http-restricted-api=model-repository:admin-key=s3cret"]
    args += ["--allow-sagemaker=true", f"--sagemaker-port={port}"]
    with running_server(repository, args) as server:
        infer = _bearer(INFER_TOKEN)
        r = _post(f"{server.base_url}/v2/models/add_sub/infer", json=_infer_body())
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = _post(f"{server.base_url}/v2/models/add_sub/infer", json=_infer_body(), headers=infer)
        assert r.status_code == 200
        models = f"http://127.0.0.1:{port}/models"
        assert _get(models, headers=infer).status_code == 403  # the role
        r = _get(models, headers=_bearer(MGMT_TOKEN))  # the role, not the header
        assert (r.status_code, r.json()) == (403, {"error": RESTRICTED.format("admin-key")})
        assert _get(models, headers={**_bearer(MGMT_TOKEN), **ADMIN}).status_code == 200
        assert _get(f"http://127.0.0.1:{port}/ping").status_code == 200


@pytest.mark.parametrize("front_end", ["modelyard", "uvicorn"])
def test_refused_before_the_body(repository: Path, tmp_path: Path, front_end: str) -> None:
    """A request the gate refuses is answered from its head: no ``100 Continue``, no upload
    of the 60 MB it announces (before, the server asked for the body and read all of it)."""
    token_file = tmp_path / "tokens"
    token_file.write_text(f"inference {INFER_TOKEN}\n")
    token_file.chmod(0o600)
    args = ["--http-server", front_end, f"--auth-token-file={token_file}"]
    args += ["--http-max-input-size", str(100 << 20)]
    with running_server(repository, args) as server:
        with socket.create_connection((server.host, server.port), timeout=60) as sock:
            sock.sendall(
                b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 60000000\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"www-authenticate: bearer" in answer.lower()
        # with a token, the same announcement is asked for (the gate let it through)
        with socket.create_connection((server.host, server.port), timeout=60) as sock:
            sock.sendall(
                b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + INFER_TOKEN.encode() + b"\r\n"
                b"Content-Length: 60000000\r\nExpect: 100-continue\r\n\r\n"
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 100")


def test_malformed_token_file_stops_the_start(repository: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"inference {INFER_TOKEN}\nadmin {MGMT_TOKEN}\n")
    token_file.chmod(0o600)
    with pytest.raises(ServerFailed) as info:
        start_server(repository, [f"--auth-token-file={token_file}"], timeout=30)
    message = str(info.value)
    assert f"cannot start: --auth-token-file {token_file}, line 2: unknown role 'admin'" in message
    assert MGMT_TOKEN not in message


def test_shared_token_file_is_a_warning(repository: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"inference {INFER_TOKEN}\n")
    token_file.chmod(0o644)
    with running_server(repository, [f"--auth-token-file={token_file}"]) as server:
        assert "readable or writable by other users (mode 644); chmod 600 it" in server.output()


# -- tools that start a server of their own --------------------------------------------------
def test_modelyard_test_passes_access_flags_through(tmp_path: Path) -> None:
    """``modelyard test --server-arg`` with access flags: the runner sends the credentials
    they imply (before, the restricted health probe kept its server from ever being ready)."""
    from typer.testing import CliRunner

    from modelyard.cli.main import app
    from tests.unit.deploy.models import python_model

    model = python_model(tmp_path / "repo", "m")
    token_file = tmp_path / "tokens"
    token_file.write_text(f"inference {INFER_TOKEN}\nmanagement {MGMT_TOKEN}\n")
    token_file.chmod(0o600)
    args = ["test", str(model), "--allow-no-cases", "--server-timeout", "60"]
    args += [f"--server-arg=--auth-token-file={token_file}"]
    args += ["--server-arg=--http-restricted-api=health,model-repository:k=v"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 passed, 0 failed" in result.output


# -- what the start-up log says -------------------------------------------------------------
def test_startup_log_states_address_and_exposure(repository: Path) -> None:
    with running_server(repository) as server:
        output = server.output()
    line = next(ln for ln in output.splitlines() if "access: HTTP on" in ln)
    assert f"HTTP on 127.0.0.1:{server.port} (this host only)" in line
    assert f"metrics on 127.0.0.1:{server.metrics_port}" in line
    assert "inference open" in line and "health open" in line
    assert "model-repository load/unload OPEN to anyone" in line
    assert "load with files disabled" in line
    assert "is open to anyone who can reach" not in output  # loopback: no warning


def test_open_repository_api_on_all_interfaces_is_a_warning(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What ``modelyard serve`` logs with its defaults (0.0.0.0), without binding anything."""
    app = build_server(ServerSettings(str(repository)))
    with caplog.at_level(logging.INFO, logger="modelyard.server"):
        app.log_exposure()
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("HTTP on 0.0.0.0:8000 (all interfaces)" in m for m in info)
    assert len(warnings) == 1
    assert "model-repository API (load/unload) is open to anyone" in warnings[0]
    caplog.clear()
    http_closed = ServerSettings(
        str(repository), http_restricted_api=(("model-repository", "k", "v"),)
    )
    with caplog.at_level(logging.INFO, logger="modelyard.server"):
        build_server(http_closed).log_exposure()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gRPC model-repository RPCs" in warnings[0]  # gRPC's own
    caplog.clear()
    closed = replace(
        http_closed, grpc=GrpcSettings(restricted_protocol=(("model-repository", "k", "v"),))
    )
    with caplog.at_level(logging.INFO, logger="modelyard.server"):
        build_server(closed).log_exposure()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
