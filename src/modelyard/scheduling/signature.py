"""A model's I/O signature, read once from its config, and request validation against it.

Checks run before any tensor reaches a runtime, with Triton's messages, so a client sees
the same error whichever server it talks to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.datatypes import config_to_wire
from modelyard.errors import InvalidArgument
from modelyard.types import Tensor


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str  # wire name: FP32, BYTES, ...
    dims: tuple[int, ...]  # without the batch dimension
    reshape: tuple[int, ...] | None  # the shape the runtime sees, without batch
    optional: bool = False
    labels: tuple[str, ...] = ()

    def full_shape(self, batched: bool) -> list[int]:
        return [-1, *self.dims] if batched else list(self.dims)


@dataclass(frozen=True, slots=True)
class Signature:
    model: str
    max_batch_size: int
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0


def _labels(model_dir: Path | None, filename: str) -> tuple[str, ...]:
    if not filename or model_dir is None:
        return ()
    path = model_dir / filename
    if not path.is_file():
        return ()
    return tuple(path.read_text(encoding="utf-8").splitlines())


def _spec(t: Any, model_dir: Path | None) -> TensorSpec:
    from tritonclient.grpc import model_config_pb2 as mc

    reshape = tuple(t.reshape.shape) if t.HasField("reshape") else None
    return TensorSpec(
        name=t.name,
        datatype=config_to_wire(mc.DataType.Name(t.data_type)),
        dims=tuple(t.dims),
        reshape=reshape,
        optional=bool(getattr(t, "optional", False)),
        labels=_labels(model_dir, getattr(t, "label_filename", "")),
    )


def signature_of(config: Any, model_dir: Path | None = None) -> Signature:
    return Signature(
        model=config.name,
        max_batch_size=config.max_batch_size,
        inputs={t.name: _spec(t, model_dir) for t in config.input},
        outputs={t.name: _spec(t, model_dir) for t in config.output},
    )


def _fmt(shape: list[int] | tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


_BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension "
    "to be prepended to each input shape. If you want to specify the full shape including the "
    "batch dim in your input dims config, try setting max_batch_size to zero. See the model "
    "configuration docs for more info on max_batch_size."
)


def _names(names: list[str]) -> str:
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


def validate_inputs(sig: Signature, inputs: list[Tensor], request_id: str | None) -> int:
    """Check names, datatypes and shapes; return the batch size (1 for unbatched models).

    Messages are Triton 2.51's, recorded from the real server
    (tests/unit/wire/fixtures/triton_infer_errors.json); an unknown input gets the clearer
    message older Triton releases gave instead of 2.51's garbled one.
    """
    prefix = f"[request id: {request_id or '<id_unknown>'}] "
    seen: set[str] = set()
    for t in inputs:
        if t.name in seen:
            raise InvalidArgument(f"{prefix}input '{t.name}' already exists in request")
        seen.add(t.name)
        if t.name not in sig.inputs:
            raise InvalidArgument(
                f"{prefix}unexpected inference input '{t.name}' for model '{sig.model}'"
            )
    required = [n for n, s in sig.inputs.items() if not s.optional]
    missing = [n for n in required if n not in seen]
    if missing:
        raise InvalidArgument(
            f"{prefix}expected {len(required)} inputs but got {len(inputs)} inputs for model "
            f"'{sig.model}'. Got input(s) {_names([t.name for t in inputs])}, but missing "
            f"required input(s) {_names(missing)}. Please provide all required input(s)."
        )
    batch = -1
    for t in inputs:
        spec = sig.inputs[t.name]
        if t.datatype != spec.datatype:
            raise InvalidArgument(
                f"{prefix}inference input '{t.name}' data-type is '{t.datatype}', but model "
                f"'{sig.model}' expects '{spec.datatype}'"
            )
        shape = t.shape
        if sig.batched:
            if not shape or shape[0] > sig.max_batch_size:
                raise InvalidArgument(
                    f"{prefix}inference request batch-size must be <= {sig.max_batch_size} "
                    f"for '{sig.model}'"
                )
            if batch == -1:
                batch = shape[0]
            elif shape[0] != batch:
                raise InvalidArgument(
                    f"{prefix}input '{t.name}' batch size does not match other inputs for "
                    f"'{sig.model}'"
                )
            shape = shape[1:]
        if not _matches(shape, spec.dims):
            expected = spec.full_shape(sig.batched)
            raise InvalidArgument(
                f"{prefix}unexpected shape for input '{t.name}' for model '{sig.model}'. "
                f"Expected {_fmt(expected)}, got {_fmt(t.shape)}. "
                + (_BATCH_NOTE if sig.batched else "")
            )
    return max(batch, 1)


def _matches(shape: list[int], dims: tuple[int, ...]) -> bool:
    if len(shape) != len(dims):
        return False
    return all(d == -1 or d == s for s, d in zip(shape, dims, strict=True))


def runtime_shape(spec: TensorSpec, shape: list[int], batched: bool) -> list[int] | None:
    """The shape the runtime expects after ``reshape``; None when no reshape applies."""
    if spec.reshape is None:
        return None
    inner = shape[1:] if batched else shape
    target = list(spec.reshape)
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(inner) // known if known else 0
    return [shape[0], *target] if batched else target


def deduce_raw_input(sig: Signature, raw: Tensor, request_id: str | None) -> Tensor:
    """Triton's raw binary request (no JSON header): the body is the model's only input.

    Name and datatype come from the config; the shape fills the config's one unknown dim
    (or the batch dimension) from the byte count.
    """
    prefix = f"[request id: {request_id or '<id_unknown>'}] "
    if len(sig.inputs) != 1:
        raise InvalidArgument(
            f"{prefix}Raw request must only have 1 input (found 1) to be deduced but got "
            f"{len(sig.inputs)} inputs in '{sig.model}' model configuration"
        )
    spec = next(iter(sig.inputs.values()))
    payload: bytes = raw.data.tobytes()
    if spec.datatype == "BYTES":
        import numpy as np

        shape = [1] * (len(spec.dims) + (1 if sig.batched else 0))
        data = np.array([payload], dtype=object).reshape(shape)
        return Tensor(spec.name, "BYTES", shape, data)
    from modelyard.datatypes import numpy_dtype

    dtype = numpy_dtype(spec.datatype)
    count, rest = divmod(len(payload), dtype.itemsize)
    dims = [*([-1] if sig.batched else []), *spec.dims]
    known = math.prod(d for d in dims if d != -1)
    unknown = dims.count(-1)
    if rest or (known and count % known) or unknown > 1 or (unknown == 0 and count != known):
        raise InvalidArgument(
            f"{prefix}unexpected size {len(payload)} of raw input for model '{sig.model}': "
            f"cannot be shaped as {_fmt(dims)} of {spec.datatype}"
        )
    shape = [count // known if d == -1 else d for d in dims] if known else [count]
    arr = raw.data.view(dtype).reshape(shape)
    return Tensor(spec.name, spec.datatype, shape, arr)
