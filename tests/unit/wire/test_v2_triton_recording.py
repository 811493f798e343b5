"""modelyard's codec against what a real Triton 2.51 answered (fixtures/triton_infer_errors.json).

Every recorded request is decoded with ``decode_infer_request``:

* requests Triton refused while parsing (stage ``parse``) must fail with Triton's message
  and status;
* every other request must decode, and for those Triton answered with 200 we run the same
  tiny models in numpy (add_sub, echo), apply classification, encode with
  ``encode_infer_response`` and compare the body with Triton's byte for byte.

Stage ``model`` errors are checks against the model config (the server's validator); here
they only have to decode.
"""

from __future__ import annotations

import base64
import json
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.errors import InvalidArgument
from modelyard.types import InferRequest, InferResponse, Tensor
from modelyard.wire.classification import classify
from modelyard.wire.v2 import RAW_INPUT_NAME, decode_infer_request, encode_infer_response

RECORDING = json.loads(
    (Path(__file__).parent / "fixtures" / "triton_infer_errors.json").read_text()
)
CASES = {c["name"]: c for c in RECORDING["cases"]}

# Where we knowingly differ from the recording, and why.
RAW_INPUT = {
    # 'Inference-Header-Content-Length: 0' (or an empty body without it) is Triton's raw binary
    # request: the body is the single input's bytes. Whether the model has one input is a
    # config check, so decoding succeeds and the validator answers like Triton.
    "empty_body",
    "header_length_zero_raw_input",
    "header_length_zero_raw_input_two_inputs",
}
NOT_A_DECODER_CASE = {
    # Triton atoi()s the header: "abc" -> 0 -> raw input. The server parses the header, so
    # this is its job; decode_infer_request takes an int.
    "header_length_not_number",
    # Triton's Python backend cannot hand BF16 to numpy; nothing about the wire.
}
PREFIX_ONLY = {
    # rapidjson's error text and offset; ours comes from Python's json and says
    # "Unterminated string ... at 19" where rapidjson says "... at 20".
    "header_length_too_short",
}

FLOAT_TEXT = {
    # Same numbers, different text: Triton's rapidjson prints doubles with Grisu2 in fixed
    # notation from 1e-6 to 1e21 and "1e300" beyond; orjson prints the shortest round-trip
    # form, in exponent notation from 1e16 and with a sign ("1e+300"). Parsed, they are equal.
    "resp_fp32_decimals",
    "resp_fp64_values",
}

LABELS = {"add_sub": [f"label{i}" for i in range(10)], "echo": ["zero", "one", "", "three"]}


def _unpack(packed: dict[str, str]) -> bytes:
    if "text" in packed:
        return packed["text"].encode()
    return base64.b64decode(packed["base64"])


def _decode(case: dict[str, Any]) -> InferRequest:
    hl = case["header_length"]
    return decode_infer_request(_unpack(case["body"]), hl, case["model"], "")


def _error_message(case: dict[str, Any]) -> str:
    message: str = json.loads(_unpack(case["response"]["body"]))["error"]
    return message


def _run_model(request: InferRequest) -> InferResponse:
    """What the recorded Python models compute."""
    data = {t.name: t.data for t in request.inputs}
    if request.model_name.startswith("add_sub"):
        outputs = [
            Tensor("OUTPUT0", "FP32", [*data["INPUT0"].shape], data["INPUT0"] + data["INPUT1"]),
            Tensor("OUTPUT1", "FP32", [*data["INPUT0"].shape], data["INPUT0"] - data["INPUT1"]),
        ]
    else:
        (tensor,) = request.inputs
        outputs = [Tensor("OUTPUT0", tensor.datatype, tensor.shape, tensor.data)]
    if request.outputs is not None:  # Triton returns only what was asked for, in model order
        names = {r.name for r in request.outputs}
        outputs = [t for t in outputs if t.name in names]
    for r in request.outputs or []:
        if r.class_count:
            i = next(i for i, t in enumerate(outputs) if t.name == r.name)
            labels = LABELS["add_sub" if request.model_name.startswith("add_sub") else "echo"]
            result = classify(
                outputs[i].data, r.class_count, labels, request.model_name == "add_sub_batched"
            )
            outputs[i] = Tensor(r.name, "BYTES", list(result.shape), result)
    return InferResponse(request.model_name, "1", outputs, id=request.id)


def _names(stage: str, *, ok: bool | None = None) -> list[str]:
    out = []
    for c in RECORDING["cases"]:
        if c["stage"] != stage or "status" not in c["response"]:
            continue
        if ok is not None and (c["response"]["status"] == 200) != ok:
            continue
        out.append(c["name"])
    return out


@pytest.mark.parametrize(
    "name", sorted(set(_names("parse", ok=False)) - RAW_INPUT - NOT_A_DECODER_CASE)
)
def test_parse_errors_match_triton(name: str) -> None:
    case = CASES[name]
    with pytest.raises(InvalidArgument) as info:
        _decode(case)
    expected = _error_message(case)
    if name in PREFIX_ONLY:
        assert info.value.message.split(":")[0] == expected.split(":")[0]
    else:
        assert info.value.message == expected
    # Triton answers malformed JSON with 500; modelyard deliberately with 400 (docs/api.md)
    assert info.value.status == HTTPStatus.BAD_REQUEST
    assert case["response"]["status"] in (400, 500)


@pytest.mark.parametrize("name", sorted(RAW_INPUT))
def test_raw_binary_requests_decode_as_one_raw_input(name: str) -> None:
    request = _decode(CASES[name])
    (tensor,) = request.inputs
    assert tensor.name == RAW_INPUT_NAME
    assert tensor.datatype == "UINT8"
    assert tensor.data.tobytes() == _unpack(CASES[name]["body"])
    assert request.binary_data_output is True


@pytest.mark.parametrize("name", _names("model"))
def test_config_errors_are_not_decoder_errors(name: str) -> None:
    request = _decode(CASES[name])
    assert request.inputs


def _ok_cases() -> list[str]:
    names = _names("parse", ok=True) + _names("model", ok=True) + _names("response", ok=True)
    return sorted(set(names) - RAW_INPUT - NOT_A_DECODER_CASE)


@pytest.mark.parametrize("name", _ok_cases())
def test_responses_are_byte_identical_to_triton(name: str) -> None:
    case = CASES[name]
    request = _decode(case)
    body, header_length = encode_infer_response(
        _run_model(request), request.outputs, request.binary_data_output
    )
    expected = _unpack(case["response"]["body"])
    if name in FLOAT_TEXT:
        assert json.loads(body) == json.loads(expected)
    else:
        assert body == expected
    assert header_length == case["response"]["header_length"]


@pytest.mark.parametrize("name", ["classification_bool", "classification_fp16"])
def test_classification_errors_match_triton(name: str) -> None:
    case = CASES[name]
    with pytest.raises(InvalidArgument) as info:
        _run_model(_decode(case))
    assert info.value.message == _error_message(case)
    assert info.value.status == HTTPStatus.BAD_REQUEST


def test_classifying_bytes_is_refused_where_triton_crashes() -> None:
    assert CASES["classification_bytes"]["response"] == {"crashes_triton": True}
    with pytest.raises(InvalidArgument, match="unsupported type 'BYTES'"):
        _run_model(_decode(CASES["classification_bytes"]))


def test_fp16_json_output_matches_triton() -> None:
    case = CASES["resp_fp16_json"]
    request = _decode(case)
    with pytest.raises(InvalidArgument) as info:
        encode_infer_response(_run_model(request), request.outputs, request.binary_data_output)
    assert info.value.message == _error_message(case)


def test_bf16_json_output_is_refused() -> None:
    # Triton's Python backend cannot produce BF16, so this text comes from http_server.cc
    data = np.zeros(2, dtype=np.dtype("bfloat16"))
    response = InferResponse("m", "1", [Tensor("OUT", "BF16", [2], data)])
    with pytest.raises(InvalidArgument) as info:
        encode_infer_response(response, None, False)
    assert info.value.message == (
        "sending BF16 data via JSON is not supported. Please use the binary data format for output"
    )


def test_every_stage_is_covered() -> None:
    stages = {c["stage"] for c in RECORDING["cases"]}
    assert stages == {"parse", "model", "response"}
    assert len(_names("model", ok=False)) >= 10
