"""The access gate's parts: Triton's option syntax, the route -> group table, token files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelyard.errors import InvalidSetting, PermissionDenied, Unauthenticated
from modelyard.protocol._access import (
    AccessPolicy,
    Group,
    Role,
    Token,
    credentials_for,
    exposure,
    is_loopback,
    load_token_file,
    parse_restricted_features,
    sagemaker_group,
    v2_group,
)
from modelyard.protocol.sagemaker import SageMakerRoutes
from modelyard.protocol.v2 import V2Routes

MGMT = "m" * 20
INFER = "i" * 20


def test_restricted_features_parse_as_triton() -> None:
    got = parse_restricted_features(["model-repository,statistics:admin-key=s3:cr=t", "health:k=v"])
    assert got == (
        ("model-repository", "admin-key", "s3:cr=t"),  # the value keeps later ':' and '='
        ("statistics", "admin-key", "s3:cr=t"),
        ("health", "k", "v"),
    )


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("model-repository", "option format is '<config name>:<setting>=<value>'"),
        ("model-repository:key", "option format"),
        (":key=value", "option format"),
        ("model-repository:=value", "option format"),
        ("model-repository:key=", "option format"),
        ("admin:key=value", "unknown restricted api 'admin'"),
        ("inference:bad key=value", "'bad key' is not a valid HTTP header name"),
        ("inference:clé=value", "is not a valid HTTP header name"),
    ],
)
def test_malformed_restrictions_are_refused(arg: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_restricted_features([arg])


def test_a_group_in_two_options_is_refused_and_grpc_wording_is_reused() -> None:
    with pytest.raises(ValueError, match="can not be specified in multiple config groups"):
        parse_restricted_features(["inference:a=b", "health,inference:c=d"])
    with pytest.raises(ValueError, match="unknown restricted protocol 'x'"):
        parse_restricted_features(["x:a=b"], "grpc-restricted-protocol", "protocol")


# one concrete path per route of each table, and the group Triton files it under; a route
# added to a table without a line here fails the test, so the gate cannot drift from routing
V2_SAMPLES = {
    "/v2/models/m/infer": Group.INFERENCE,
    "/v2/models/m/versions/2/infer": Group.INFERENCE,
    "/v2/models/m/generate": Group.INFERENCE,
    "/v2/models/m/generate_stream": Group.INFERENCE,
    "/v2/health/live": Group.HEALTH,
    "/v2/health/ready": Group.HEALTH,
    "/v2": Group.METADATA,
    "/v2/openapi.json": Group.METADATA,
    "/v2/models/stats": Group.STATISTICS,
    "/v2/models/m/ready": Group.HEALTH,
    "/v2/models/m/versions/1/ready": Group.HEALTH,
    "/v2/models/m/config": Group.MODEL_CONFIG,
    "/v2/models/m/stats": Group.STATISTICS,
    "/v2/models/m": Group.METADATA,
    "/v2/models/m/versions/3": Group.METADATA,
    "/v2/repository/index": Group.MODEL_REPOSITORY,
    "/v2/repository/models/m/load": Group.MODEL_REPOSITORY,
    "/v2/repository/models/m/unload": Group.MODEL_REPOSITORY,
}
SAGEMAKER_SAMPLES = {
    "/models/m/invoke": Group.INFERENCE,
    "/invocations": Group.INFERENCE,
    "/ping": Group.HEALTH,
    "/models": Group.MODEL_REPOSITORY,
    "/models/": Group.MODEL_REPOSITORY,
    "/models/m": Group.MODEL_REPOSITORY,
}


def test_every_v2_route_has_its_triton_group() -> None:
    for route in V2Routes(None, 1).table:  # type: ignore[arg-type]
        served = [p for p in V2_SAMPLES if route.pattern.fullmatch(p)]
        assert served, f"no sample path for route {route.pattern.pattern}: add one"
    for path, group in V2_SAMPLES.items():
        assert v2_group(path) is group, path
    # Triton's other groups, for routes modelyard answers 404 (and a later front end)
    assert v2_group("/v2/systemsharedmemory/status") is Group.SHARED_MEMORY
    assert v2_group("/v2/cudasharedmemory/region/r/register") is Group.SHARED_MEMORY
    assert v2_group("/v2/trace/setting") is Group.TRACE
    assert v2_group("/v2/models/m/trace/setting") is Group.TRACE
    assert v2_group("/v2/logging") is Group.LOGGING
    assert v2_group("/v2/repository/anything/else") is Group.MODEL_REPOSITORY
    assert v2_group("/metrics") is None
    assert v2_group("/nothing") is None


def test_every_sagemaker_route_has_its_triton_group() -> None:
    routes = SageMakerRoutes(None, 1)  # type: ignore[arg-type]
    for route in routes.table:
        served = [p for p in SAGEMAKER_SAMPLES if route.pattern.fullmatch(p)]
        assert served, f"no sample path for route {route.pattern.pattern}: add one"
    for path, group in SAGEMAKER_SAMPLES.items():
        assert sagemaker_group(path) is group, path
    # a model named like an action stays in the group of the route that serves it
    assert sagemaker_group("/models/invoke") is Group.MODEL_REPOSITORY
    assert sagemaker_group("/models/a/b/invoke") is Group.MODEL_REPOSITORY
    assert v2_group("/v2/models/versions/ready") is Group.HEALTH
    assert v2_group("/v2/models/infer") is Group.METADATA


def _tokens() -> list[Token]:
    return [Token(Role.MANAGEMENT, MGMT.encode()), Token(Role.INFERENCE, INFER.encode())]


def test_tokens_and_roles() -> None:
    policy = AccessPolicy((), _tokens())
    policy.check(Group.HEALTH, {}, "/v2/health/ready")  # probes need no token
    policy.check(Group.HEALTH, {}, "/ping")
    with pytest.raises(Unauthenticated):  # a model's readiness is no probe
        policy.check(Group.HEALTH, {}, "/v2/models/m/ready")
    with pytest.raises(Unauthenticated) as missing:
        policy.check(Group.INFERENCE, {})
    assert not missing.value.invalid_token
    with pytest.raises(Unauthenticated) as wrong:
        policy.check(Group.INFERENCE, {b"authorization": b"Bearer " + b"x" * 20})
    assert wrong.value.invalid_token
    with pytest.raises(Unauthenticated):  # another scheme is no bearer token
        policy.check(Group.INFERENCE, {b"authorization": b"Basic " + INFER.encode()})
    policy.check(Group.INFERENCE, {b"authorization": b"bearer " + INFER.encode()})
    policy.check(None, {b"authorization": b"Bearer " + INFER.encode()})  # /metrics
    with pytest.raises(PermissionDenied, match="needs a management token"):
        policy.check(Group.MODEL_REPOSITORY, {b"authorization": b"Bearer " + INFER.encode()})
    policy.check(Group.MODEL_REPOSITORY, {b"authorization": b"Bearer " + MGMT.encode()})
    policy.check(Group.INFERENCE, {b"authorization": b"Bearer " + MGMT.encode()})


def test_restricted_header_is_case_insensitive_in_name_exact_in_value() -> None:
    policy = AccessPolicy([("model-repository", "Admin-Key", "secret")])
    with pytest.raises(
        PermissionDenied, match=r"^This API is restricted, expecting header 'Admin-Key'$"
    ):
        policy.check(Group.MODEL_REPOSITORY, {b"admin-key": b"Secret"})
    policy.check(Group.MODEL_REPOSITORY, {b"admin-key": b"secret"})
    policy.check(Group.INFERENCE, {})
    policy.check(None, {})


def _write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_token_file(tmp_path: Path) -> None:
    path = _write(tmp_path, f"# ops\nmanagement {MGMT}\n\n  inference   {INFER}  \n")
    loaded = load_token_file(path)
    assert [t.role for t in loaded.tokens] == [Role.MANAGEMENT, Role.INFERENCE]
    assert loaded.warnings == ()
    assert MGMT not in repr(loaded)  # secrets stay out of logs and tracebacks
    shared = load_token_file(_write(tmp_path, f"inference {INFER}\n", 0o644))
    assert "chmod 600" in shared.warnings[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no token"),
        ("# nothing\n", "holds no token"),
        (f"admin {MGMT}\n", "line 1: unknown role 'admin'"),
        (f"inference\n{MGMT}\n", "line 1: expected '<role> <token>'"),
        (f"inference {INFER} extra\n", "line 1: expected '<role> <token>'"),
        ("\ninference short\n", "line 2: a token is at least 16"),
        (f"inference {INFER}\nmanagement {INFER}\n", "line 2: the same token appears twice"),
    ],
)
def test_malformed_token_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidSetting, match=re.escape(message)) as info:
        load_token_file(_write(tmp_path, text))
    assert INFER not in str(info.value) and MGMT not in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_token_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidSetting, match="No such file"):
        load_token_file(tmp_path / "absent")


def test_exposure_sentence() -> None:
    text, open_management = exposure(AccessPolicy(), repository_api=True, load_files=False)
    assert "model-repository load/unload OPEN to anyone" in text
    assert "load with files disabled" in text and open_management
    restricted = AccessPolicy([("model-repository", "k", "v")], _tokens())
    text, open_management = exposure(restricted, repository_api=True, load_files=True)
    assert "model-repository load/unload needs management token and header 'k'" in text
    assert "inference needs token" in text
    assert "health open (server probes; model readiness needs a token)" in text
    assert not open_management
    text, open_management = exposure(AccessPolicy(), repository_api=False, load_files=False)
    assert "off (--model-control-mode)" in text and not open_management


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_credentials_for_serve_args(tmp_path: Path) -> None:
    tokens = _write(tmp_path, f"inference {INFER}\nmanagement {MGMT}\n")
    args = ["--http-restricted-api", "health:probe=1", "--http-restricted-api=inference:k=v"]
    got = credentials_for([*args, f"--auth-token-file={tokens}", "--log-verbose=1"])
    assert got == {"probe": "1", "k": "v", "Authorization": f"Bearer {MGMT}"}
    only_inference = _write(tmp_path, f"inference {INFER}\n")
    assert credentials_for(["--auth-token-file", str(only_inference)]) == {
        "Authorization": f"Bearer {INFER}"
    }
    assert credentials_for(["--http-restricted-api=bogus", "--auth-token-file=/absent"]) == {}
