"""The model mix and request bodies: options, mix files, generated and recorded inputs, and
requests the server's own decoder reads back exactly."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from modelyard.loadtest._http import Target
from modelyard.loadtest.workload import (
    MixEntry,
    MixError,
    case_inputs,
    generate_inputs,
    infer_request,
    load_entry_cases,
    load_mix_file,
    parse_model_option,
)
from modelyard.wire.sagemaker import header_length, parse_target_model
from modelyard.wire.v2 import decode_infer_request

TARGET = Target.from_url("http://127.0.0.1:8000/fleet")
ADD_SUB = [
    {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]},
    {"name": "INPUT1", "datatype": "FP32", "shape": [-1, 16]},
]


def test_model_options() -> None:
    assert parse_model_option("mlp") == MixEntry("mlp")
    assert parse_model_option("mlp:2") == MixEntry("mlp", "2")
    assert parse_model_option("mlp=3") == MixEntry("mlp", "", 3.0)
    assert parse_model_option("mlp:2=0.5") == MixEntry("mlp", "2", 0.5)
    for bad, match in (("=2", "NAME"), ("m:x", "version 'x'"), ("m=y", "weight 'y'"),
                       ("m=0", "above zero")):  # fmt: skip
        with pytest.raises(MixError, match=match):
            parse_model_option(bad)


def test_mix_file(tmp_path: Path) -> None:
    path = tmp_path / "mix.yaml"
    path.write_text(
        "models:\n"
        "  - {name: add_sub, weight: 3, batch_size: 4, shapes: {INPUT0: [4, 16]}}\n"
        "  - {name: classifier, version: 1, cases: models/classifier/tests}\n"
        "  - mlp=2\n"
    )
    a, b, c = load_mix_file(path)
    assert a == MixEntry("add_sub", "", 3.0, 4, None, {"INPUT0": (4, 16)})
    assert b.version == "1" and b.cases == tmp_path / "models/classifier/tests"
    assert c == MixEntry("mlp", "", 2.0)
    for text, match in (
        ("models: []", "non-empty"),
        ("models:\n  - {name: a, wieght: 2}", "unknown key 'wieght'"),
        ("models:\n  - {weight: 2}", "'name' is required"),
        ("models:\n  - {name: a, weight: -1}", "above zero"),
        ("models:\n  - {name: a, shapes: {X: [0]}}", "positive integers"),
        ("extra: 1\nmodels: [a]", "unknown key 'extra'"),
        ("models: [a, {name: b", "not valid YAML"),
    ):
        path.write_text(text)
        with pytest.raises(MixError, match=match):
            load_mix_file(path)
    with pytest.raises(MixError, match=r"mix\.json"):
        load_mix_file(tmp_path / "mix.json")


def test_generated_inputs_follow_the_metadata() -> None:
    rng = np.random.default_rng(0)
    a, b = generate_inputs(ADD_SUB, rng, batch_size=4)
    assert (a.name, a.datatype, a.shape, a.data.dtype) == ("INPUT0", "FP32", [4, 16], np.float32)
    assert b.data.shape == (4, 16)
    (text,) = generate_inputs(
        [{"name": "T", "datatype": "BYTES", "shape": [-1, -1]}], rng, dim_size=3
    )
    assert text.shape == [1, 3] and all(
        isinstance(v, bytes) and len(v) == 8 for v in text.data.flat
    )
    half, ids, flag = generate_inputs(
        [
            {"name": "H", "datatype": "BF16", "shape": [2]},
            {"name": "I", "datatype": "INT64", "shape": [-1, 5]},
            {"name": "B", "datatype": "BOOL", "shape": [3]},
        ],
        rng,
        shapes={"I": (2, 7)},
    )
    assert half.data.dtype == ml_dtypes.bfloat16
    assert ids.shape == [2, 7] and ids.data.dtype == np.int64 and ids.data.min() >= 0
    assert flag.data.dtype == np.bool_
    with pytest.raises(MixError, match="no input 'NOPE'"):
        generate_inputs(ADD_SUB, rng, shapes={"NOPE": (1,)})


def _split(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert int(headers["content-length"]) == len(body)
    return first, headers, body


def test_v2_requests_decode_on_the_server_side_exactly() -> None:
    tensors = generate_inputs(ADD_SUB, np.random.default_rng(3), batch_size=2)
    raw = infer_request(TARGET, "v2", "add sub", "2", tensors, ["OUTPUT0"], {"X-Token": "t"})
    first, headers, body = _split(raw)
    assert first == "POST /fleet/v2/models/add%20sub/versions/2/infer HTTP/1.1"
    assert headers["host"] == "127.0.0.1:8000" and headers["x-token"] == "t"
    request = decode_infer_request(body, int(headers["inference-header-content-length"]), "m", "")
    for sent, got in zip(tensors, request.inputs, strict=True):
        assert got.name == sent.name and got.shape == sent.shape
        assert np.array_equal(got.data, sent.data)
    assert [o.name for o in request.outputs] == ["OUTPUT0"]


def test_sagemaker_requests_name_the_target_model() -> None:
    tensors = generate_inputs(ADD_SUB, np.random.default_rng(3))
    raw = infer_request(TARGET, "sagemaker", "add_sub", "", tensors, [], endpoint="prod")
    first, headers, body = _split(raw)
    assert first == "POST /fleet/endpoints/prod/invocations HTTP/1.1"
    assert parse_target_model(headers["x-amzn-sagemaker-target-model"]) == ("add_sub", "")
    length = header_length(headers["content-type"].encode(), len(body))
    request = decode_infer_request(body, length, "add_sub", "")
    assert np.array_equal(request.inputs[1].data, tensors[1].data)


def test_recorded_cases_become_bodies(tmp_path: Path) -> None:
    (tmp_path / "cases.yaml").write_text(
        "cases:\n"
        "  - name: ones\n"
        f"    inputs: {{INPUT0: {{shape: [1, 16], data: {[1] * 16}}}, INPUT1: [{[2] * 16}]}}\n"
        "    outputs: {OUTPUT0: [[3]]}\n"
        "  - name: refused\n"
        "    inputs: {INPUT0: {datatype: FP32, shape: [3], data: [1, 2, 3]}}\n"
        "    error: {status: 400}\n"
    )
    entry = MixEntry("add_sub", cases=tmp_path)
    cases = load_entry_cases(entry)
    (body,) = case_inputs(cases, ADD_SUB)  # the case that expects an error is not load
    assert body[0].datatype == "FP32" and body[0].data.dtype == np.float32
    assert body[1].data.tolist() == [[2.0] * 16]
    with pytest.raises(MixError, match="neither a folder nor a file"):
        load_entry_cases(MixEntry("x", cases=tmp_path / "missing"))
    with pytest.raises(MixError, match="no input 'INPUT0'"):
        case_inputs(cases, [])
