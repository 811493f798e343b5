"""What each request carries: the model mix and real request bodies.

The mix comes from ``--model NAME[:VERSION][=WEIGHT]`` options, from a mix file, or from the
server's repository index (every model, equal weights). A mix file (YAML or JSON)::

    models:
      - name: add_sub
        weight: 3                    # share of the requests (default 1)
        version: "1"                 # default: the model's default version
        batch_size: 4                # a leading -1 dimension (default --batch-size, 1)
        dim_size: 16                 # every other -1 dimension (default --dim-size, 1)
        shapes: {INPUT0: [4, 16]}    # or each input's shape outright
      - name: classifier
        cases: models/classifier/tests   # recorded cases (a folder or one case file)

Bodies are generated from the model's metadata (names, datatypes, shapes; seeded random
values) or taken from the deploy loop's test cases (``tests/*.yaml``, docs/deploy.md; cases
that expect an error are skipped). Each is encoded once, with the binary tensor extension
(``wire/v2.encode_infer_request``, as tritonclient sends), into the whole HTTP request that
is then sent verbatim.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import ml_dtypes
import numpy as np

from modelyard.datatypes import numpy_dtype
from modelyard.deploy.testcases import TestCase, load_case_file, load_cases, to_array
from modelyard.errors import ConfigError, InvalidArgument
from modelyard.loadtest._http import Target, raw_request
from modelyard.types import Array, Tensor
from modelyard.wire.sagemaker import binary_content_type, target_model
from modelyard.wire.v2 import encode_infer_request

__all__ = [
    "MixEntry",
    "MixError",
    "case_inputs",
    "generate_inputs",
    "infer_request",
    "load_mix_file",
    "parse_model_option",
]

_ENTRY_KEYS = {"name", "version", "weight", "batch_size", "dim_size", "shapes", "cases"}


class MixError(ConfigError):
    """A model mix (option or file) that cannot be used; the message says where."""


@dataclass(frozen=True, slots=True)
class MixEntry:
    name: str
    version: str = ""
    weight: float = 1.0
    batch_size: int | None = None
    dim_size: int | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    cases: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name


def parse_model_option(text: str) -> MixEntry:
    """``NAME``, ``NAME:VERSION``, ``NAME=WEIGHT`` or ``NAME:VERSION=WEIGHT``."""
    spec, _, weight_text = text.partition("=")
    name, _, version = spec.partition(":")
    if not name:
        raise MixError(f"--model {text!r}: expected NAME[:VERSION][=WEIGHT]")
    weight = 1.0
    if weight_text:
        try:
            weight = float(weight_text)
        except ValueError:
            raise MixError(
                f"--model {text!r}: the weight {weight_text!r} is not a number"
            ) from None
    if version and not version.isdigit():
        raise MixError(f"--model {text!r}: the version {version!r} is not a number")
    if not weight > 0 or not math.isfinite(weight):
        raise MixError(f"--model {text!r}: the weight must be above zero")
    return MixEntry(name, version, weight)


def load_mix_file(path: Path) -> list[MixEntry]:
    try:
        text = path.read_text()
    except OSError as err:
        raise MixError(f"--mix {path}: {err.strerror or err}") from None
    try:
        if path.suffix == ".json":
            doc = json.loads(text)
        else:
            import yaml  # PyYAML: only when a YAML mix is read

            doc = yaml.safe_load(text)
    except ValueError as err:  # yaml.YAMLError is not one; caught below
        raise MixError(f"{path.name}: not valid JSON: {err}") from None
    except Exception as err:
        raise MixError(f"{path.name}: not valid YAML: {err}") from None
    raw = doc.get("models") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and set(doc) - {"models"}:
        raise MixError(
            f"{path.name}: unknown key '{sorted(set(doc) - {'models'})[0]}' (known: models)"
        )
    if not isinstance(raw, list) or not raw:
        raise MixError(f"{path.name}: expected a non-empty list of models (or a 'models:' list)")
    return [_entry(item, i, path) for i, item in enumerate(raw, 1)]


def _entry(raw: Any, index: int, path: Path) -> MixEntry:
    where = f"{path.name}: model {index}"
    if isinstance(raw, str):
        return parse_model_option(raw)
    if not isinstance(raw, dict):
        raise MixError(f"{where}: expected a mapping or a NAME[:VERSION][=WEIGHT] string")
    extra = sorted(str(k) for k in raw if k not in _ENTRY_KEYS)
    if extra:
        raise MixError(
            f"{where}: unknown key '{extra[0]}' (known: {', '.join(sorted(_ENTRY_KEYS))})"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise MixError(f"{where}: 'name' is required")
    where = f"{path.name}: model '{name}'"
    weight = raw.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise MixError(f"{where}: weight must be a number above zero")
    version = raw.get("version", "")
    if version not in ("", None) and not str(version).isdigit():
        raise MixError(f"{where}: version must be a number")
    shapes: dict[str, tuple[int, ...]] = {}
    for input_name, shape in (raw.get("shapes") or {}).items():
        if not isinstance(shape, list) or not all(_count(d) for d in shape):
            raise MixError(f"{where}: shapes.{input_name} must be a list of positive integers")
        shapes[str(input_name)] = tuple(shape)
    sizes = {}
    for key in ("batch_size", "dim_size"):
        value = raw.get(key)
        if value is not None and not _count(value):
            raise MixError(f"{where}: {key} must be a positive integer")
        sizes[key] = value
    cases = raw.get("cases")
    return MixEntry(
        name=name,
        version="" if version in ("", None) else str(version),
        weight=float(weight),
        batch_size=sizes["batch_size"],
        dim_size=sizes["dim_size"],
        shapes=shapes,
        cases=(path.parent / str(cases)) if cases else None,
    )


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def generate_inputs(
    inputs: list[dict[str, Any]],
    rng: np.random.Generator,
    *,
    batch_size: int = 1,
    dim_size: int = 1,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> list[Tensor]:
    """Random tensors for a model's metadata ``inputs``: a leading ``-1`` is the batch
    (``batch_size``), any other ``-1`` is ``dim_size``; ``shapes`` overrides per input."""
    shapes = shapes or {}
    unknown = sorted(set(shapes) - {str(i.get("name")) for i in inputs})
    if unknown:
        raise MixError(f"shapes: the model has no input '{unknown[0]}'")
    out = []
    for item in inputs:
        name, datatype = str(item["name"]), str(item["datatype"])
        meta_shape = [int(d) for d in item.get("shape", [])]
        if name in shapes:
            shape = list(shapes[name])
        else:
            shape = [
                (batch_size if i == 0 else dim_size) if d < 0 else d
                for i, d in enumerate(meta_shape)
            ]
        out.append(Tensor(name, datatype, shape, _random(datatype, tuple(shape), rng)))
    return out


def _random(datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> Array:
    if datatype == "BYTES":
        letters = rng.integers(97, 123, size=(math.prod(shape), 8), dtype=np.uint8)
        arr = np.empty(len(letters), dtype=object)
        arr[:] = [bytes(row) for row in letters]
        return arr.reshape(shape)
    if datatype == "BOOL":
        return rng.random(shape) < 0.5
    if datatype == "BF16":
        return rng.random(shape, dtype=np.float32).astype(ml_dtypes.bfloat16)
    dtype = numpy_dtype(datatype)
    if dtype.kind == "f":
        return rng.random(shape).astype(dtype)
    # small non-negative integers: safe as indices, lengths or token ids
    return rng.integers(0, 8, size=shape).astype(dtype)


def case_inputs(cases: list[TestCase], inputs: list[dict[str, Any]]) -> list[list[Tensor]]:
    """The inputs of the cases that expect an answer, typed by the model's metadata."""
    types = {str(i["name"]): str(i["datatype"]) for i in inputs}
    bodies = []
    for case in cases:
        if case.error is not None:
            continue
        tensors = []
        for spec in case.inputs:
            datatype = spec.datatype or types.get(spec.name)
            if datatype is None:
                raise MixError(f"{case.title}: the model has no input '{spec.name}'")
            arr = to_array(spec, datatype, f"{case.title}: {spec.name}")
            tensors.append(Tensor(spec.name, datatype, list(arr.shape), _typed(datatype, arr)))
        bodies.append(tensors)
    return bodies


def load_entry_cases(entry: MixEntry) -> list[TestCase]:
    path = entry.cases
    if path is None:
        return []
    if path.is_dir():
        cases = load_cases(path, entry.name, entry.version)
    elif path.is_file():
        cases = load_case_file(path, entry.name, entry.version)
    else:
        raise MixError(f"model '{entry.name}': cases {str(path)!r} is neither a folder nor a file")
    if not any(c.error is None for c in cases):
        raise MixError(f"model '{entry.name}': {path} holds no case that expects an answer")
    return cases


def _typed(datatype: str, arr: Array) -> Array:
    if datatype == "BYTES":
        return arr
    return np.ascontiguousarray(arr, dtype=numpy_dtype(datatype))


def model_path(name: str, version: str) -> str:
    path = f"/v2/models/{quote(name, safe='')}"
    return f"{path}/versions/{quote(version, safe='')}" if version else path


def infer_request(
    target: Target,
    protocol: str,
    name: str,
    version: str,
    tensors: list[Tensor],
    outputs: list[str],
    headers: dict[str, str] | None = None,
    endpoint: str = "loadtest",
) -> bytes:
    """The whole HTTP request for one inference, over KServe v2 or SageMaker's invoke API."""
    body, head = encode_infer_request(tensors, outputs)
    extra = dict(headers or {})
    if protocol == "v2":
        extra["Content-Type"] = "application/octet-stream"
        extra["Inference-Header-Content-Length"] = str(head)
        path = model_path(name, version) + "/infer"
    elif protocol == "sagemaker":
        extra["Content-Type"] = binary_content_type(head).decode()
        extra["X-Amzn-SageMaker-Target-Model"] = target_model(name, version)
        path = f"/endpoints/{quote(endpoint, safe='')}/invocations"
    else:
        raise InvalidArgument(f"--protocol {protocol!r}: expected v2 or sagemaker")
    return raw_request(target, "POST", path, body, extra)
