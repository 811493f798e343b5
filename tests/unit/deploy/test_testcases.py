"""The test-case schema: what parses, what is refused (with file and case named), arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelyard.deploy.testcases import CaseError, load_case_file, load_cases, to_array


def _write(tmp_path: Path, text: str, name: str = "cases.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_inline_files_defaults_and_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "expected.npy", np.array([[2.0, 3.0]], dtype=np.float32))
    np.savez(tmp_path / "inputs.npz", A=np.ones((1, 2), np.float32), B=np.ones((1, 2), np.float32))
    path = _write(
        tmp_path,
        """
atol: 0.5
cases:
  - name: inline
    inputs: {A: [[1, 2]], B: {datatype: FP32, shape: [1, 2], data: [1, 1]}}
    outputs:
      S: {file: expected.npy, rtol: 0}
      D: [0, 1]
  - inputs: inputs.npz
    outputs: {S: {data: [2, 2], atol: 0.1}}
    parameters: {priority: 1}
    version: 3
  - name: refused
    inputs: {A: {datatype: BYTES, data: ["a", "b"]}}
    error: {status: 400, message: "unexpected"}
""",
    )
    first, second, third = load_case_file(path, "m", "2")
    assert first.title == "cases.yaml::inline" and (first.model, first.version) == ("m", "2")
    assert first.atol == 0.5
    a, b = first.inputs
    assert a.datatype is None and b.datatype == "FP32" and b.shape == (1, 2)
    s, d = first.outputs
    assert s.check_shape and s.shape == (1, 2) and s.rtol == 0 and s.datatype == "FP32"
    assert not d.check_shape
    assert second.name == "case 2" and second.version == "3"
    assert [i.name for i in second.inputs] == ["A", "B"] and second.parameters == {"priority": 1}
    assert second.outputs[0].atol == 0.1
    assert third.error is not None and third.error.status == 400
    assert third.error.message == "unexpected" and not third.outputs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cases: []", "non-empty list of cases"),
        ("- inputs: {A: [1]}\n", "no outputs to check"),
        ("- outputs: {A: [1]}\n", "no inputs"),
        ("- inputs: {A: [1]}\n  ouputs: {B: [1]}\n", "unknown key 'ouputs'"),
        ("- inputs: {A: {dtype: FP32, data: [1]}}\n  outputs: {B: [1]}", "unknown key 'dtype'"),
        ("- inputs: {A: {datatype: FLOAT, data: [1]}}\n  outputs: {B: [1]}", "unknown datatype"),
        ("- inputs: {A: [1]}\n  outputs: {B: [1]}\n  error: 'x'", "outputs or an error"),
        ("- inputs: {A: [1]}\n  outputs: {B: [1]}\n  atol: -1", "must not be negative"),
        ("- inputs: {A: {file: nope.npy}}\n  outputs: {B: [1]}", "cannot read 'nope.npy'"),
        ("- name: x\n  inputs: {A: [1]}\n  outputs: {B: [1]}\n" * 2, "two cases are named 'x'"),
        ("- inputs: {A: [1]\n", "not valid YAML"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CaseError, match=message) as info:
        load_case_file(_write(tmp_path, text), "m")
    assert str(info.value).startswith("cases.yaml")


def test_json_case_files_and_the_folder(tmp_path: Path) -> None:
    _write(tmp_path, '{"cases": [{"inputs": {"A": [1]}, "outputs": {"B": [1]}}]}', "b.json")
    _write(tmp_path, "- inputs: {A: [1]}\n  outputs: {B: [1]}\n", "a.yml")
    _write(tmp_path, "not a case file", "notes.txt")
    assert [c.file for c in load_cases(tmp_path, "m")] == ["a.yml", "b.json"]
    assert load_cases(tmp_path / "missing", "m") == []


def test_arrays_of_every_kind(tmp_path: Path) -> None:
    (case,) = load_case_file(
        _write(
            tmp_path,
            """
- inputs:
    F: {shape: [2, 2], data: [1, 2, 3, 4]}
    T: {datatype: BYTES, data: [["hello", "wörld"]]}
    R: {datatype: BYTES, encoding: base64, data: ["AP8="]}
  outputs: {B: [true, false]}
""",
        ),
        "m",
    )
    f, t, r = case.inputs
    assert to_array(f, "FP16", "w").dtype == np.float16
    assert to_array(f, "INT32", "w").shape == (2, 2)
    text = to_array(t, "BYTES", "w")
    assert text.shape == (1, 2) and text[0, 1] == "wörld".encode()
    assert to_array(r, "BYTES", "w")[0] == b"\x00\xff"
    assert to_array(case.outputs[0], "BOOL", "w").tolist() == [True, False]
    with pytest.raises(CaseError, match="do not fill the shape"):
        to_array(f.__class__("F", "FP32", (3,), [1, 2]), "FP32", "w")


def test_npy_bytes_need_no_pickle(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.array([b"ab", b"c"]))
    (case,) = load_case_file(
        _write(tmp_path, "- inputs: {T: {file: t.npy}}\n  outputs: {B: [1]}\n"), "m"
    )
    assert case.inputs[0].datatype == "BYTES"
    assert to_array(case.inputs[0], "BYTES", "w").tolist() == [b"ab", b"c"]
    np.save(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CaseError, match=r"cannot read 'o\.npy'"):
        load_case_file(_write(tmp_path, "- inputs: {T: {file: o.npy}}\n  outputs: {B: [1]}\n"), "m")
