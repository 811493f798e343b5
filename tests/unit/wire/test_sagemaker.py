"""SageMaker wire pieces: TargetModel names, Triton's binary+json content type, MME bodies."""

from __future__ import annotations

import orjson
import pytest

from modelyard.errors import InvalidArgument
from modelyard.wire.sagemaker import (
    BINARY_JSON,
    InvalidTargetModel,
    binary_content_type,
    header_length,
    model_description,
    parse_load_request,
    parse_target_model,
    target_model,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("m_2.tar.gz", ("m", "2")),
        (b"m_2.tar.gz", ("m", "2")),
        ("screen_detection_pipeline_3.tar.gz", ("screen_detection_pipeline", "3")),
        ("add_sub.tar.gz", ("add_sub", "")),  # "sub" is no version: the default one
        ("m.tar.gz", ("m", "")),
        ("m", ("m", "")),
        ("m_7", ("m", "7")),
        ("m_2.tgz", ("m", "2")),
        ("m_02.tar.gz", ("m", "2")),
        ("prefix/dir/m_2.tar.gz", ("m", "2")),  # a relative path: the artifact names it
        ("_2.tar.gz", ("_2", "")),
        ("m_.tar.gz", ("m_", "")),
    ],
)
def test_target_model_names_model_and_version(
    value: str | bytes, expected: tuple[str, str]
) -> None:
    assert parse_target_model(value) == expected


@pytest.mark.parametrize("value", [None, "", b"  ", "dir/", "..", "x/.tar.gz"])
def test_a_missing_target_model_is_refused(value: str | bytes | None) -> None:
    with pytest.raises(InvalidTargetModel):
        parse_target_model(value)


def test_target_model_round_trips() -> None:
    assert target_model("m", "2") == "m_2.tar.gz"
    assert parse_target_model(target_model("a_b", "10")) == ("a_b", "10")
    assert parse_target_model(target_model("a_b")) == ("a_b", "")


def test_plain_json_has_no_header_length() -> None:
    assert header_length(None, 10) is None
    assert header_length(b"application/json", 10) is None
    assert header_length(b"text/csv", 10) is None


def test_binary_json_gives_the_header_length() -> None:
    assert header_length(f"{BINARY_JSON};json-header-size=7".encode(), 10) == 7
    assert header_length(f"{BINARY_JSON.upper()};JSON-HEADER-SIZE=0".encode(), 10) == 0
    assert header_length(binary_content_type(10), 10) == 10


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (f"{BINARY_JSON};json-header-size=11", "inference header size should be in range (0, 10)"),
        (f"{BINARY_JSON};json-header-size=x", "Unable to parse inference header size, got: x"),
        (f"text/plain, {BINARY_JSON};json-header-size=1", "expect MIME type for binary data"),
    ],
)
def test_a_bad_binary_json_content_type_says_why(content_type: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        header_length(content_type.encode(), 10)


def test_response_content_type_carries_the_header_size() -> None:
    assert binary_content_type(123) == (
        b"application/vnd.sagemaker-triton.binary+json;json-header-size=123"
    )


def test_load_request_body() -> None:
    body = orjson.dumps({"model_name": "abc", "url": "/opt/ml/models/abc/model"})
    assert parse_load_request(body) == ("abc", "/opt/ml/models/abc/model")
    assert model_description("abc", "/u") == {"modelName": "abc", "modelUrl": "/u"}


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"url": "/u"}',
        b'{"model_name": "", "url": "/u"}',
        b'{"model_name": "a/b", "url": "/u"}',
        b'{"model_name": "a"}',
        b'{"model_name": "a", "url": 3}',
    ],
)
def test_a_bad_load_request_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidArgument):
        parse_load_request(body)
