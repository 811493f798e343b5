"""``model_warmup`` samples as requests, run before a model reports ready (as in Triton).

Each sample names its inputs with a type, dims and data: zeros, random values, or a file
under ``<model>/warmup/`` holding the raw tensor (BYTES in Triton's length-prefixed form).
For a model that batches, the sample's ``batch_size`` is prepended to the dims. ``count``
runs it that many times (0 means once).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.datatypes import config_to_wire, numpy_dtype
from modelyard.errors import ConfigError
from modelyard.scheduling.signature import Signature
from modelyard.types import Array, InferRequest, Tensor


def warmup_requests(
    config: Any, signature: Signature, model_dir: Path | None
) -> list[tuple[InferRequest, int]]:
    samples: list[tuple[InferRequest, int]] = []
    rng = np.random.default_rng(0)
    for sample in config.model_warmup:
        inputs = []
        for name, spec in sample.inputs.items():
            wire = config_to_wire(mc_type_name(spec.data_type))
            dims = [int(d) for d in spec.dims]
            if signature.batched:
                dims = [max(1, int(sample.batch_size)), *dims]
            data = _data(sample.name, name, wire, dims, spec, rng, model_dir, config.name)
            inputs.append(Tensor(name, wire, dims, data))
        request = InferRequest(model_name=config.name, id=f"warmup:{sample.name}", inputs=inputs)
        samples.append((request, max(1, int(sample.count))))
    return samples


def mc_type_name(value: int) -> str:
    from tritonclient.grpc import model_config_pb2 as mc

    return str(mc.DataType.Name(value))


def _data(
    sample: str,
    name: str,
    wire: str,
    dims: list[int],
    spec: Any,
    rng: np.random.Generator,
    model_dir: Path | None,
    model: str,
) -> Array:
    count = int(np.prod(dims)) if dims else 1
    kind = spec.WhichOneof("input_data_type")
    if wire == "BYTES":
        if kind == "input_data_file":
            raw = _read(model_dir, spec.input_data_file, sample, model)
            return _split_bytes(raw, count, sample, name).reshape(dims)
        fill = b"" if kind != "random_data" else None
        items = [
            fill if fill is not None else bytes(rng.integers(97, 123, 8).tolist())
            for _ in range(count)
        ]
        return np.array(items, dtype=object).reshape(dims)
    dtype = numpy_dtype(wire)
    if kind == "input_data_file":
        raw = _read(model_dir, spec.input_data_file, sample, model)
        if len(raw) != count * dtype.itemsize:
            raise ConfigError(
                f"warmup sample '{sample}' of model '{model}': file '{spec.input_data_file}' "
                f"holds {len(raw)} bytes, input '{name}' needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(dims).copy()
    if kind == "random_data":
        if dtype.kind == "f":
            return rng.random(dims).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, dims).astype(dtype)
        return rng.integers(0, 8, dims).astype(dtype)
    return np.zeros(dims, dtype=dtype)


def _read(model_dir: Path | None, filename: str, sample: str, model: str) -> bytes:
    if model_dir is None:
        raise ConfigError(f"warmup sample '{sample}' of model '{model}' needs its model folder")
    folder = (model_dir / "warmup").resolve()
    path = (folder / filename).resolve()
    if not path.is_relative_to(folder):
        raise ConfigError(
            f"warmup sample '{sample}' of model '{model}': '{filename}' is outside warmup/"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"warmup sample '{sample}' of model '{model}': cannot read {path}: {exc.strerror}"
        ) from None


def _split_bytes(raw: bytes, count: int, sample: str, name: str) -> Array:
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise ConfigError(f"warmup sample '{sample}': input '{name}' file is too short")
        (n,) = struct.unpack_from("<I", raw, pos)
        out[i] = raw[pos + 4 : pos + 4 + n]
        pos += 4 + n
    return out
