"""Fuzzing every route of the real server: no unexplained 5xx, answers as described, alive after.

A server process (``modelyard serve``: on-demand, SageMaker's container face enabled, a
1 MiB body limit, a private ``$TMPDIR``) over a small real repository: an ONNX add/sub, an
ONNX identity on strings and a Python-backend add/sub. The tests about what reaches the
application from the wire also run against a second one under ``--http-server uvicorn``.
All examples are derandomized (a fixed hypothesis seed, no example database) and bounded,
so a run is the same run every time (docs/robustness.md lists them):

* **schemathesis** drives every operation of the published OpenAPI description
  (``GET /v2/openapi.json``) with valid and invalid data, and checks each answer's status,
  content type and body against the description;
* **hostile model names** (``.``, ``..``, ``%2F``, very long, unicode, control characters)
  on every route that takes one, sent as raw bytes with ``http.client`` so no client
  library normalises them away, and in loads that send files;
* **hostile bodies** on every route that takes one: malformed, deeply nested, huge,
  compressed wrongly, under the wrong content type; and **other methods** on every path.

The only 5xx statuses allowed are the documented ones (``ALLOWED_5XX``, docs/robustness.md);
any other fails the test (the findings of issue 12 it once recorded are fixed: nested JSON,
CONNECT, ``.``/``..``/NUL names with files, override folders left behind). After each test
the server must still be ready and still answer an inference.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from modelyard.protocol.openapi import spec, spec_json
from modelyard.testing import RunningServer, free_port, running_server
from tests.factories.onnx_models import add_sub, identity, write_model
from tests.factories.python_models import add_sub_model
from tests.integration.conftest import ADD_SUB

MODELS = ("add_sub", "echo_bytes", "py_add_sub")

# the examples: a fixed seed, no database (a run never depends on an earlier one), bounded;
# no deadline (a loaded 2-core machine is slow), no shrinking beyond a few steps
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=6,
    suppress_health_check=list(HealthCheck),
)

# 5xx statuses the server may answer, by (status, path pattern): why, in docs/robustness.md
ALLOWED_5XX: list[tuple[int, re.Pattern[str], str]] = [
    # a model or version that cannot serve right now (not loaded, failed, draining; explicit
    # load/unload outside explicit/on-demand mode)
    (503, re.compile(r".*"), "model unavailable"),
    # Content-Encoding other than gzip/deflate/identity (Triton's text and status); infer on
    # a decoupled model (none in this repository)
    (501, re.compile(r".*"), "unsupported compression or request kind"),
    # SageMaker's container contract: a model that does not fit in memory
    (507, re.compile(r"/models.*|/invocations"), "insufficient memory (SageMaker contract)"),
]


@dataclass
class Target:
    server: RunningServer
    sagemaker_port: int
    tmpdir: Path  # the server's $TMPDIR

    def port_for(self, path: str) -> int:
        """The container face's paths are on its own port; everything else on the HTTP port."""
        return self.sagemaker_port if _is_container_path(path) else self.server.port


def _is_container_path(path: str) -> bool:
    return path in ("/ping", "/invocations") or path == "/models" or path.startswith("/models/")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    write_model(repo, "echo_bytes", identity(TensorProto.STRING, ["batch", "n"]), None)
    add_sub_model(repo, "py_add_sub")
    return repo


@contextlib.contextmanager
def _serve(
    repository: Path, tmp_path_factory: pytest.TempPathFactory, extra: list[str]
) -> Iterator[Target]:
    # files sent with load requests are written under $TMPDIR: a private one, so that a
    # hostile name (issue 12 item 2: "." removes $TMPDIR) can only touch this folder
    tmpdir = tmp_path_factory.mktemp("server-tmp")
    port = free_port()
    args = [
        # on-demand: the mode with the most API open (loads, with files too), as by default
        "--model-control-mode",
        "on-demand",
        "--allow-sagemaker=true",
        "--sagemaker-port",
        str(port),
        "--load-model",
        "add_sub",
        "--http-max-input-size",
        str(1 << 20),
        # loads with files open too, so hostile names reach the code that writes files
        "--allow-model-load-files=true",
        *extra,
    ]
    with running_server(repository, args, env={"TMPDIR": str(tmpdir)}) as server:
        yield Target(server, port, tmpdir)


@pytest.fixture(scope="module")
def target(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The server on modelyard's own HTTP front end (the default)."""
    with _serve(repository, tmp_path_factory, []) as t:
        yield t


@pytest.fixture(scope="module")
def uvicorn_target(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The same under ``--http-server uvicorn``: another HTTP parser, another path decoding."""
    with _serve(repository, tmp_path_factory, ["--http-server", "uvicorn"]) as t:
        yield t


@pytest.fixture(scope="module", params=["own", "uvicorn"])
def front_end(request: pytest.FixtureRequest) -> Target:
    """Both front ends, for the tests about what reaches the application from the wire."""
    fixture = "target" if request.param == "own" else "uvicorn_target"
    served: Target = request.getfixturevalue(fixture)
    return served


@pytest.fixture(autouse=True)
def alive_after(target: Target, request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test ends with the server (each server it used) ready and answering."""
    yield
    assert_alive(target)
    if "front_end" in request.fixturenames:
        assert_alive(request.getfixturevalue("front_end"))


def assert_alive(target: Target) -> None:
    assert target.server.process.poll() is None, target.server.output()[-4000:]
    status, _, _ = raw(target, "GET", "/v2/health/ready")
    assert status == 200
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16},
                {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": [2.0] * 16},
            ]
        }
    )
    status, _, answer = raw(target, "POST", "/v2/models/add_sub/infer", body)
    assert status == 200, answer
    outputs = {o["name"]: o["data"] for o in orjson.loads(answer)["outputs"]}
    assert outputs["OUTPUT0"] == [3.0] * 16


def raw(
    target: Target,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    port: int | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with exactly these bytes in the request line (no normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port or target.port_for(path), timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if body is not None:
            all_headers.setdefault("Content-Length", str(len(body)))
        for name, value in all_headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def check_status(method: str, path: str, status: int, body: bytes) -> None:
    """No 5xx but the allowed ones."""
    if status < 500:
        return
    for allowed, pattern, _ in ALLOWED_5XX:
        if status == allowed and pattern.fullmatch(path.split("?")[0]):
            return
    raise AssertionError(f"{method} {path[:200]} -> {status}: {body[:500]!r}")


# -- the description itself -----------------------------------------------------------------
def test_the_served_description_is_the_packaged_one(target: Target) -> None:
    status, headers, body = raw(target, "GET", "/v2/openapi.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body) == orjson.loads(spec_json())


def _operations() -> list[tuple[str, str]]:
    return [
        (method.upper(), template)
        for template, item in spec()["paths"].items()
        for method in ("get", "post", "delete")
        if method in item
    ]


@pytest.mark.parametrize(("method", "template"), _operations())
def test_every_described_route_is_served(front_end: Target, method: str, template: str) -> None:
    """The router answers each described operation itself (not its 404/405), on its port:
    the prefix checks in ``ModelyardApp.handle`` included, which the unit test cannot see."""
    path = template.format(model="add_sub", version="1", endpoint="e")
    body = b"{}" if method == "POST" else None
    status, _, answer = raw(front_end, method, path, body)
    assert (status, answer) not in (
        (404, b'{"error":"Not Found"}'),
        (405, b'{"error":"Method Not Allowed"}'),
        (404, b'{"message":"Not Found"}'),
    ), f"{method} {path} is described but the server does not route it"
    check_status(method, path, status, answer)


# -- schemathesis over the description ------------------------------------------------------
SCHEMA = schemathesis.openapi.from_dict(spec())
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = {
    f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())
}
# real model names as well as generated ones, so examples also reach the models' handlers.
# Names that change the path's shape ("/", "?", "#", "%", dot segments) are the hostile-name
# test's, sent as raw bytes: HTTP clients encode or normalise them, each differently.
MODEL_NAMES = st.one_of(
    st.sampled_from(MODELS),
    st.text(
        st.characters(blacklist_characters="/?#%", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=40,
    ).filter(lambda name: name.strip(".") != ""),
)


def _negatable(name: str) -> bool:
    """Operations with something to make invalid: a body, or a parameter with a schema
    narrower than any string (a version's digits, a page size)."""
    item = spec()["paths"][name.split(" ", 1)[1]]
    op = item[name.split(" ", 1)[0].lower()]
    params = [*item.get("parameters", []), *op.get("parameters", [])]
    typed = [
        p
        for p in params
        if ("$ref" in p and p["$ref"].endswith("/version"))
        or p.get("schema", {}).get("type", "string") != "string"
    ]
    return "requestBody" in op or bool(typed)


CASES = [
    (name, mode)
    for name in sorted(OPERATIONS)
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    if mode is schemathesis.GenerationMode.POSITIVE or _negatable(name)
]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_schemathesis(target: Target, name: str, mode: schemathesis.GenerationMode) -> None:
    op = OPERATIONS[name]
    takes_model = "{model}" in op.path

    @FUZZ
    @given(case=op.as_strategy(generation_mode=mode), model=MODEL_NAMES)
    def run(case: schemathesis.Case, model: str) -> None:
        if takes_model:
            case.path_parameters = {**(case.path_parameters or {}), "model": model}
        base = f"http://127.0.0.1:{target.port_for(op.path)}"
        response = case.call(base_url=base, timeout=60)
        check_status(case.method, case.formatted_path, response.status_code, response.content)
        if mode is schemathesis.GenerationMode.POSITIVE:
            case.validate_response(response, checks=CHECKS)

    run()


# -- hostile model names --------------------------------------------------------------------
# Raw request-line forms: each is put into the path exactly as written here.
HOSTILE_NAMES = [
    ".",
    "..",
    "%2E",
    "%2e%2E",
    "%2F",
    "a%2Fb",
    "..%2F..%2Fetc%2Fpasswd",
    "%2E%2E%2F%2E%2E",
    "add_sub%2F..",
    "add_sub%00",
    "add_sub%20",
    "add_sub.",
    "ADD_SUB",
    "x" * 300,
    "x" * 20000,
    "%C3%A9",
    "%E6%A8%A1%E5%9E%8B",
    "%F0%9F%A4%96",
    "%FF%FE",  # not UTF-8
    "%00",
    "%0A",
    "%0D%0AX-Injected:%201",
    "%20",
    "~",
    "%24(id)",
    "'%3B--",
    "%25",
    "%252F",
    "%3F",
    "%23",
    "%5C..%5C..",
    "con",
]
MODEL_ROUTES = sorted(
    {
        (method, template)
        for method, template in _operations()
        if "{model}" in template and "{endpoint}" not in template
    }
)


def _model_path(template: str, name: str) -> str:
    return template.replace("{model}", name).replace("{version}", "1")


def _hostile_name_answer(target: Target, method: str, template: str, name: str) -> None:
    path = _model_path(template, name)
    body = b"{}" if method == "POST" else None
    status, _, answer = raw(target, method, path, body)
    check_status(method, path, status, answer)
    # a hostile name never reaches a model: not ".", not "..", not the repository's folder
    assert not 200 <= status < 300, f"{method} {path[:200]} -> {status}: {answer[:300]!r}"


@pytest.mark.parametrize(("method", "template"), MODEL_ROUTES)
def test_hostile_model_names(front_end: Target, method: str, template: str) -> None:
    for name in HOSTILE_NAMES:
        _hostile_name_answer(front_end, method, template, name)


@FUZZ
@given(
    route=st.sampled_from(MODEL_ROUTES),
    name=st.text(min_size=1, max_size=80).filter(lambda n: n not in MODELS),
)
def test_generated_model_names(target: Target, route: tuple[str, str], name: str) -> None:
    """Any text, percent-encoded whole (a "/" travels as %2F, which the server decodes)."""
    method, template = route
    encoded = quote(name.encode("utf-8", "surrogatepass"), safe="")
    _hostile_name_answer(target, method, template, encoded)


def _load_with_files(
    target: Target, name: str, config_name: str, onnx: bytes
) -> tuple[int, bytes, str | None]:
    """A repository load sending a config and a model file; ``(status, body, what it did
    to $TMPDIR that it should not have)``. $TMPDIR is recreated if the load removed it."""
    config = orjson.dumps({"name": config_name, "backend": "onnxruntime"}).decode()
    files = {"config": config, "file:1/model.onnx": base64.b64encode(onnx).decode()}
    before = set(os.listdir(target.tmpdir))
    status, _, answer = raw(
        target, "POST", f"/v2/repository/models/{name}/load", orjson.dumps({"parameters": files})
    )
    if not target.tmpdir.is_dir():
        target.tmpdir.mkdir()
        return status, answer, "removed $TMPDIR"
    left = sorted(set(os.listdir(target.tmpdir)) - before)
    return status, answer, (f"left {left} in $TMPDIR" if left and status != 200 else None)


def test_hostile_names_with_files_touch_nothing_outside_the_server(target: Target) -> None:
    """A load that sends files writes them into a folder the server creates, and a name
    can neither delete nor write into anything around it (issue 12 item 2)."""
    for name in [".", "..", "%2E", "%2E%2E", "..%2F..", "%2F", "%00"]:
        status, answer, problem = _load_with_files(target, name, "x", add_sub())
        path = f"/v2/repository/models/{name}/load"
        assert problem is None, f"POST {path}: {status} {answer[:300]!r}; {problem}"
        check_status("POST", path, status, answer)
        assert not 200 <= status < 300, f"POST {path} -> {status}"


def test_failed_loads_with_files_leave_nothing_behind(target: Target) -> None:
    """A load whose files do not load (a broken model, a config naming another model)
    is refused with a 4xx and removes what it wrote; the version serving stays."""
    for name, config_name, onnx in [
        ("add_sub", "add_sub", b"not onnx"),
        ("fresh", "other", add_sub()),
    ]:
        status, answer, problem = _load_with_files(target, name, config_name, onnx)
        path = f"/v2/repository/models/{name}/load"
        check_status("POST", path, status, answer)
        assert 400 <= status < 500, (status, answer[:300])
        assert problem is None, f"POST {path}: {status} {answer[:300]!r}; {problem}"
    assert_alive(target)


# -- hostile bodies -------------------------------------------------------------------------
DEEP = 100_000
HOSTILE_BODIES: dict[str, bytes] = {
    "empty": b"",
    "not json": b"{",
    "nul bytes": b"\x00\x00\x00",
    "utf-16": '{"inputs": []}'.encode("utf-16"),
    "not utf-8": b'{"inputs": "\xff\xfe"}',
    "a list": b"[]",
    "a string": b'"x"',
    "a number": b"1e999",
    "null": b"null",
    "deep array": b"[" * DEEP + b"]" * DEEP,
    "deep object": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep inputs": b'{"inputs":' + b"[" * DEEP + b"]" * DEEP + b"}",
    "deep data": b'{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"FP32","data":'
    + b"[" * DEEP
    + b"]" * DEEP
    + b"}]}",
    "deep parameters": b'{"parameters":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
    "over the size limit": b"[" + b"1," * 600_000 + b"1]",
    "inputs a number": b'{"inputs": 5}',
    "inputs of numbers": b'{"inputs": [1, 2]}',
    "huge shape": b'{"inputs":[{"name":"INPUT0","shape":[4294967296,4294967296],"datatype":"FP32","data":[1]}]}',
    "negative shape": b'{"inputs":[{"name":"INPUT0","shape":[-1,16],"datatype":"FP32","data":[1]}]}',
    "wrong datatype": b'{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"FP99","data":[1]}]}',
    "data of objects": b'{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"FP32","data":[{}]}]}',
    "binary size too big": b'{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"FP32","parameters":{"binary_data_size":99999999}}]}',
    "parameters a number": b'{"parameters": 1.5}',
    "parameters a list": b'{"parameters": [1]}',
    "file not base64": b'{"parameters": {"config": "{}", "file:1/model.onnx": 5}}',
    "config not json": b'{"parameters": {"config": "{bad"}}',
    "config a list": b'{"parameters": {"config": "[]"}}',
    "ready a string": b'{"ready": "yes"}',
    "url a number": b'{"model_name": "x", "url": 5}',
    "name a list": b'{"model_name": [], "url": "/"}',
}
HOSTILE_HEADERS: dict[str, dict[str, str]] = {
    "json": {},
    "text/plain": {"Content-Type": "text/plain"},
    "no content type": {"Content-Type": ""},
    "form": {"Content-Type": "application/x-www-form-urlencoded"},
    "sagemaker binary": {
        "Content-Type": "application/vnd.sagemaker-triton.binary+json;json-header-size=3"
    },
    "sagemaker binary, bad size": {
        "Content-Type": "application/vnd.sagemaker-triton.binary+json;json-header-size=x"
    },
    "binary header 3": {"Inference-Header-Content-Length": "3"},
    "binary header 0": {"Inference-Header-Content-Length": "0"},
    "binary header huge": {"Inference-Header-Content-Length": "99999999999999999999"},
    "binary header negative": {"Inference-Header-Content-Length": "-1"},
    "gzip, not gzip": {"Content-Encoding": "gzip"},
    "unknown coding": {"Content-Encoding": "br"},
}
BODY_ROUTES = [
    "/v2/models/add_sub/infer",
    "/v2/models/py_add_sub/infer",
    "/v2/models/echo_bytes/infer",
    "/v2/models/add_sub/versions/1/infer",
    "/v2/models/add_sub/generate",
    "/v2/models/add_sub/generate_stream",
    "/v2/repository/index",
    "/v2/repository/models/add_sub/load",
    "/v2/repository/models/no_such_model/unload",
    "/endpoints/e/invocations",
    "/invocations",
    "/models",
    "/models/add_sub/invoke",
]
# SageMaker's routes name their model in a header; the others ignore it
TARGET = {"X-Amzn-SageMaker-Target-Model": "add_sub"}


# the header sets that only inference reads (binary tensors, SageMaker's content type) go
# to the routes that infer; the others get the ones every body-reading route interprets
GENERIC_HEADERS = ("json", "text/plain", "no content type", "gzip, not gzip", "unknown coding")


def _headers_for(route: str) -> dict[str, dict[str, str]]:
    if route.endswith(("/infer", "/invocations", "/invoke")):
        return HOSTILE_HEADERS
    return {k: v for k, v in HOSTILE_HEADERS.items() if k in GENERIC_HEADERS}


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_hostile_bodies(front_end: Target, route: str) -> None:
    for body_name, body in HOSTILE_BODIES.items():
        for headers_name, headers in _headers_for(route).items():
            status, _, answer = raw(front_end, "POST", route, body, {**TARGET, **headers})
            try:
                check_status("POST", route, status, answer)
            except AssertionError as exc:
                raise AssertionError(f"{body_name}, {headers_name}: {exc}") from None


def test_load_parameters_must_be_an_object(target: Target) -> None:
    """Found by this suite: ``{"parameters": 1.5}`` was a 500 (AttributeError)."""
    for parameters in (b"1.5", b"[1]", b'"config"', b"true"):
        body = b'{"parameters": ' + parameters + b"}"
        status, _, answer = raw(target, "POST", "/v2/repository/models/add_sub/load", body)
        assert status == 400, answer
        assert orjson.loads(answer) == {"error": "the request's 'parameters' must be a JSON object"}


def test_compressed_bodies(front_end: Target) -> None:
    """Bombs stop at the size limit (after decompression too); broken streams are 400."""
    cases = [
        ("gzip", gzip.compress(b"0" * (5 << 20)), 400),
        ("deflate", zlib.compress(b"{" * (5 << 20)), 400),
        ("gzip", b"not gzip", 400),
        ("gzip", gzip.compress(b'{"inputs": []}')[:-5], 400),
        ("deflate", zlib.compress(b"[" * DEEP + b"]" * DEEP), None),
        ("br", b"x", 501),
    ]
    for encoding, body, expected in cases:
        status, _, answer = raw(
            front_end, "POST", "/v2/models/add_sub/infer", body, {"Content-Encoding": encoding}
        )
        check_status("POST", "/v2/models/add_sub/infer", status, answer)
        if expected is not None:
            assert status == expected, (encoding, status, answer[:200])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
# bodies shaped like the requests the routes expect, with generated values where they matter
SHAPED = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"inputs": JSON_VALUES}),
    st.fixed_dictionaries(
        {
            "inputs": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(["INPUT0", "INPUT1", "x"]),
                        "shape": st.lists(st.integers(min_value=-2, max_value=1 << 40), max_size=4),
                        "datatype": st.sampled_from(
                            ["FP32", "BYTES", "BOOL", "INT64", "FP16", "x"]
                        ),
                        "data": JSON_VALUES,
                    },
                    optional={"parameters": JSON_VALUES},
                ),
                max_size=3,
            )
        },
        optional={"outputs": JSON_VALUES, "parameters": JSON_VALUES, "id": JSON_VALUES},
    ),
    st.fixed_dictionaries({"parameters": JSON_VALUES}),
    st.fixed_dictionaries({"model_name": JSON_VALUES, "url": JSON_VALUES}),
)


@settings(FUZZ, max_examples=60)
@given(route=st.sampled_from(BODY_ROUTES), doc=SHAPED)
def test_generated_bodies(target: Target, route: str, doc: Any) -> None:
    try:
        body = orjson.dumps(doc)
    except (orjson.JSONEncodeError, TypeError):  # integers beyond 64 bits: send Python's text
        body = repr(doc).encode()
    status, _, answer = raw(target, "POST", route, body, TARGET)
    check_status("POST", route, status, answer)


# -- methods --------------------------------------------------------------------------------
PATHS = [
    "/v2",
    "/v2/models/add_sub",
    "/v2/models/add_sub/infer",
    "/metrics",
    "/endpoints/e/invocations",
    "/ping",
    "/models",
    "/nowhere",
    "*",
]


@pytest.mark.parametrize(
    "method",
    ["PUT", "PATCH", "OPTIONS", "TRACE", "DELETE", "PROPFIND", "HEAD", "CONNECT", "FOO", "get"],
)
def test_other_methods_are_answered(front_end: Target, method: str) -> None:
    for path in PATHS:
        status, _, answer = raw(front_end, method, path, None if method == "HEAD" else b"{}")
        check_status(method, path, status, answer)
        assert status in (200, 400, 404, 405, 501), (method, path, status, answer[:200])


# -- the end --------------------------------------------------------------------------------
def test_zz_the_server_still_serves_every_model(target: Target) -> None:
    """Runs last: after everything above, every model it had still answers."""
    for model in MODELS:
        status, _, answer = raw(target, "GET", f"/v2/models/{model}")
        assert status == 200, answer
    status, _, answer = raw(
        target,
        "POST",
        "/v2/models/py_add_sub/infer",
        orjson.dumps(
            {
                "inputs": [
                    {"name": "INPUT0", "shape": [16], "datatype": "FP32", "data": [1.0] * 16},
                    {"name": "INPUT1", "shape": [16], "datatype": "FP32", "data": [2.0] * 16},
                ]
            }
        ),
    )
    assert status == 200, answer
