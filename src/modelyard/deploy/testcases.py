"""Model test cases: the YAML/JSON files in a model's ``tests/`` folder (docs/deploy.md).

Every ``*.yaml``, ``*.yml`` and ``*.json`` file directly in ``tests/`` is a case file::

    atol: 1.0e-6                 # defaults for every case of the file (optional)
    rtol: 1.0e-5
    cases:
      - name: adds and subtracts
        inputs:
          INPUT0: {shape: [4], data: [1, 2, 3, 4]}       # datatype: the model's, if omitted
          INPUT1: {datatype: FP32, data: [[1, 1, 1, 1]]} # shape: the nesting's, if omitted
        outputs:
          OUTPUT0: [2, 3, 4, 5]                          # compared element by element
          OUTPUT1: {file: expected.npy, atol: 0.01}      # shape compared too (from the file)
      - name: batch from files
        inputs: inputs.npz                               # every array of the file, by name
        outputs: expected.npz
      - name: text
        inputs: {TEXT: {datatype: BYTES, data: ["hello", "wörld"]}}
        outputs: {LENGTH: [5, 5]}
      - name: wrong shape is refused
        inputs: {INPUT0: {datatype: FP32, shape: [3], data: [1, 2, 3]}}
        error: {status: 400, message: "unexpected shape"}

A file may also be a bare list of cases. Unknown keys are errors (a typo never passes
silently). ``.npy``/``.npz`` files are read without pickle, so BYTES arrays in them are
fixed-width strings (``np.array(["a", "b"])``); inline BYTES are UTF-8 strings, or base64
with ``encoding: base64``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.datatypes import numpy_dtype, wire_datatype
from modelyard.errors import ConfigError, InvalidArgument
from modelyard.types import Array

__all__ = [
    "CASE_SUFFIXES",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "CaseError",
    "ExpectedError",
    "TensorSpec",
    "TestCase",
    "load_case_file",
    "load_cases",
    "to_array",
]

CASE_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-5
_FILE_KEYS = {"model", "version", "atol", "rtol", "cases"}
_CASE_KEYS = {"name", "model", "version", "inputs", "outputs", "error", "atol", "rtol",
              "parameters"}  # fmt: skip
_TENSOR_KEYS = {"datatype", "shape", "data", "file", "key", "encoding", "atol", "rtol"}


class CaseError(ConfigError):
    """A case file that does not follow the schema; the message names file and case."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An input to send or an output to expect, as the file gives it (datatype may be left
    for the model's metadata to fill in, see :func:`to_array`)."""

    name: str
    datatype: str | None
    shape: tuple[int, ...] | None  # explicit, or the file's array's
    data: Any  # nested lists, or an ndarray from a file
    encoding: str = "utf-8"
    atol: float | None = None
    rtol: float | None = None
    check_shape: bool = False  # expected outputs: shape given or data from a file


@dataclass(frozen=True, slots=True)
class ExpectedError:
    status: int | None = None
    message: str | None = None  # a substring of the error message

    def describe(self) -> str:
        parts = [f"status {self.status}"] if self.status else []
        if self.message:
            parts.append(f"a message containing {self.message!r}")
        return "an error" + (" with " + " and ".join(parts) if parts else "")


@dataclass(frozen=True, slots=True)
class TestCase:
    __test__ = False  # not a pytest class

    name: str
    file: str  # the case file's name, for reports
    model: str
    version: str  # "" for the artifact's own
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    error: ExpectedError | None
    parameters: dict[str, Any] = field(default_factory=dict)
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL

    @property
    def title(self) -> str:
        return f"{self.file}::{self.name}"


def load_cases(tests_dir: Path, model: str, version: str = "") -> list[TestCase]:
    """Every case of every case file directly in ``tests_dir``, files in name order."""
    cases: list[TestCase] = []
    if not tests_dir.is_dir():
        return cases
    for path in sorted(tests_dir.iterdir(), key=lambda p: p.name):
        if path.is_file() and path.suffix in CASE_SUFFIXES:
            cases.extend(load_case_file(path, model, version))
    return cases


def _read(path: Path) -> Any:
    text = path.read_text()
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as err:
            raise CaseError(f"{path.name}: not valid JSON: {err}") from None
    import yaml  # PyYAML: only when a YAML case file is read

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CaseError(f"{path.name}: not valid YAML: {err}") from None


def load_case_file(path: Path, model: str, version: str = "") -> list[TestCase]:
    doc = _read(path)
    where = path.name
    defaults: dict[str, Any] = {}
    if isinstance(doc, dict):
        _unknown(doc, _FILE_KEYS, where)
        defaults = doc
        raw_cases = doc.get("cases")
    else:
        raw_cases = doc
    if not isinstance(raw_cases, list) or not raw_cases:
        raise CaseError(f"{where}: expected a non-empty list of cases (or a 'cases:' list)")
    cases = []
    names: set[str] = set()
    for index, raw in enumerate(raw_cases, 1):
        case = _case(raw, index, path, defaults, model, version)
        if case.name in names:
            raise CaseError(f"{where}: two cases are named '{case.name}'")
        names.add(case.name)
        cases.append(case)
    return cases


def _case(
    raw: Any, index: int, path: Path, defaults: dict[str, Any], model: str, version: str
) -> TestCase:
    if not isinstance(raw, dict):
        raise CaseError(f"{path.name}: case {index} is not a mapping")
    name = str(raw.get("name") or f"case {index}")
    where = f"{path.name}: case '{name}'"
    _unknown(raw, _CASE_KEYS, where)
    atol = _number(raw.get("atol", defaults.get("atol", DEFAULT_ATOL)), f"{where}: atol")
    rtol = _number(raw.get("rtol", defaults.get("rtol", DEFAULT_RTOL)), f"{where}: rtol")
    inputs = _tensors(raw.get("inputs"), path, f"{where}: inputs", expected=False)
    if not inputs:
        raise CaseError(f"{where}: no inputs")
    outputs = _tensors(raw.get("outputs"), path, f"{where}: outputs", expected=True)
    error = _error(raw.get("error"), where)
    if error is not None and outputs:
        raise CaseError(f"{where}: a case expects outputs or an error, not both")
    if error is None and not outputs:
        raise CaseError(f"{where}: no outputs to check (give 'outputs' or 'error')")
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise CaseError(f"{where}: parameters must be a mapping")
    case_version = raw.get("version", defaults.get("version", version))
    return TestCase(
        name=name,
        file=path.name,
        model=str(raw.get("model", defaults.get("model", model))),
        version="" if case_version in (None, "") else str(case_version),
        inputs=inputs,
        outputs=outputs,
        error=error,
        parameters=dict(parameters),
        atol=atol,
        rtol=rtol,
    )


def _unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(str(k) for k in raw if k not in known)
    if extra:
        raise CaseError(f"{where}: unknown key '{extra[0]}' (known: {', '.join(sorted(known))})")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CaseError(f"{where} must be a number, not {value!r}")
    if value < 0:
        raise CaseError(f"{where} must not be negative")
    return float(value)


def _error(raw: Any, where: str) -> ExpectedError | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        return ExpectedError()
    if isinstance(raw, str):
        return ExpectedError(message=raw)
    if isinstance(raw, dict):
        _unknown(raw, {"status", "message"}, f"{where}: error")
        status = raw.get("status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
            raise CaseError(f"{where}: error status must be an HTTP status number")
        message = raw.get("message")
        return ExpectedError(status, None if message is None else str(message))
    raise CaseError(f"{where}: error must be true, a message, or {{status, message}}")


def _tensors(raw: Any, path: Path, where: str, *, expected: bool) -> list[TensorSpec]:
    if raw is None:
        return []
    if isinstance(raw, str):  # a whole .npz: one tensor per array
        arrays = _load_npz(path.parent / raw, f"{where}: '{raw}'")
        return [_from_array(name, arr, expected) for name, arr in sorted(arrays.items())]
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: expected a mapping of tensor names, or an .npz file name")
    return [
        _tensor(str(name), spec, path, f"{where}: {name}", expected) for name, spec in raw.items()
    ]


def _from_array(name: str, arr: Array, expected: bool) -> TensorSpec:
    return TensorSpec(name, _datatype_of(arr), tuple(arr.shape), arr, check_shape=expected)


def _tensor(name: str, spec: Any, path: Path, where: str, expected: bool) -> TensorSpec:
    if not isinstance(spec, dict):
        spec = {"data": spec}
    _unknown(spec, _TENSOR_KEYS, where)
    if not expected and ("atol" in spec or "rtol" in spec):
        raise CaseError(f"{where}: atol/rtol belong to expected outputs")
    datatype = spec.get("datatype")
    if datatype is not None:
        datatype = str(datatype).upper()
        try:
            numpy_dtype(datatype)
        except InvalidArgument:
            raise CaseError(f"{where}: unknown datatype '{datatype}'") from None
    shape = spec.get("shape")
    if shape is not None:
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise CaseError(f"{where}: shape must be a list of non-negative integers")
        shape = tuple(shape)
    encoding = str(spec.get("encoding", "utf-8"))
    if encoding not in ("utf-8", "base64"):
        raise CaseError(f"{where}: encoding is utf-8 or base64")
    atol = _number(spec["atol"], f"{where}: atol") if "atol" in spec else None
    rtol = _number(spec["rtol"], f"{where}: rtol") if "rtol" in spec else None
    if "file" in spec:
        if "data" in spec:
            raise CaseError(f"{where}: give 'data' or 'file', not both")
        arr = _load_file(path.parent / str(spec["file"]), spec.get("key", name), where)
        if shape is not None and tuple(arr.shape) != shape:
            arr = arr.reshape(shape)
        return TensorSpec(
            name,
            datatype or _datatype_of(arr),
            tuple(arr.shape),
            arr,
            encoding,
            atol,
            rtol,
            check_shape=True,
        )
    if "data" not in spec:
        raise CaseError(f"{where}: no 'data' or 'file'")
    data = spec["data"]
    return TensorSpec(
        name,
        datatype,
        shape,
        data,
        encoding,
        atol,
        rtol,
        check_shape=expected and shape is not None,
    )


def _datatype_of(arr: Array) -> str:
    try:
        return wire_datatype(arr.dtype)
    except InvalidArgument as err:
        raise CaseError(str(err)) from None


def _load_file(file: Path, key: str, where: str) -> Array:
    if file.suffix == ".npz":
        arrays = _load_npz(file, where)
        if key not in arrays:
            raise CaseError(f"{where}: '{file.name}' has no array '{key}' ({sorted(arrays)})")
        return arrays[key]
    try:
        arr: Array = np.load(file, allow_pickle=False)
        return arr
    except (OSError, ValueError) as err:
        raise CaseError(f"{where}: cannot read '{file.name}': {err}") from None


def _load_npz(file: Path, where: str) -> dict[str, Array]:
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, AttributeError) as err:
        raise CaseError(f"{where}: cannot read '{file.name}' as .npz: {err}") from None


def to_array(spec: TensorSpec, datatype: str, where: str) -> Array:
    """The tensor as an array of ``datatype`` (BYTES: an object array of bytes)."""
    data = spec.data
    if datatype == "BYTES":
        if isinstance(data, np.ndarray):
            flat = [_element_bytes(x, spec.encoding, where) for x in data.reshape(-1).tolist()]
            shape = data.shape
        else:
            nested = np.array(data, dtype=object)
            flat = [_element_bytes(x, spec.encoding, where) for x in nested.reshape(-1).tolist()]
            shape = nested.shape
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        out: Array = arr.reshape(shape)
    else:
        try:
            out = np.asarray(data, dtype=numpy_dtype(datatype))
        except (TypeError, ValueError) as err:
            raise CaseError(f"{where}: data is not {datatype}: {err}") from None
    if spec.shape is not None and tuple(out.shape) != spec.shape:
        if out.size != int(np.prod(spec.shape)):
            raise CaseError(f"{where}: {out.size} values do not fill the shape {list(spec.shape)}")
        out = out.reshape(spec.shape)
    return out


def _element_bytes(value: Any, encoding: str, where: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if encoding == "base64":
        try:
            return base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise CaseError(f"{where}: {value!r} is not base64") from None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool | int | float):
        return str(value).encode()
    raise CaseError(f"{where}: BYTES elements are strings, not {type(value).__name__}")
