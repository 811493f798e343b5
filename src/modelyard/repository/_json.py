"""The JSON Triton serves on ``GET /v2/models/{m}/config``, rule for rule.

Triton (``ModelConfigToJson``) prints the protobuf with ``preserve_proto_field_names`` and
``always_print_primitive_fields``, then rewrites a fixed list of 64-bit fields from protobuf's
JSON strings (``"4"``) to numbers. We walk the descriptors ourselves rather than call
``json_format`` because we need three things it does not give across protobuf releases:

* keys in declaration order (C++ order; Python's printer puts defaults last);
* every field without presence printed: scalars at their default, ``[]`` and ``{}``, while
  unset message fields and unset ``oneof`` members are left out;
* exactly Triton's list of int64 paths as numbers and every other 64-bit field as a string.
  That includes Triton's own slip: ``sequence_batching.state[].initial_state[].dims`` stays a
  list of strings, because Triton looks for ``initial_state`` on the wrong object.

The result is a plain dict; the wire layer serialises it (Triton's body has no spaces).
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any, Final

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

# The field-name paths (list items and map values are transparent) Triton turns into numbers.
_INT64_AS_NUMBER: Final[frozenset[tuple[str, ...]]] = frozenset(
    {
        ("input", "dims"),
        ("input", "reshape", "shape"),
        ("output", "dims"),
        ("output", "reshape", "shape"),
        ("version_policy", "specific", "versions"),
        ("dynamic_batching", "max_queue_delay_microseconds"),
        ("dynamic_batching", "priority_levels"),
        ("dynamic_batching", "default_priority_level"),
        ("dynamic_batching", "default_queue_policy", "default_timeout_microseconds"),
        ("dynamic_batching", "priority_queue_policy", "default_timeout_microseconds"),
        ("sequence_batching", "max_sequence_idle_microseconds"),
        ("sequence_batching", "oldest", "max_queue_delay_microseconds"),
        ("sequence_batching", "direct", "max_queue_delay_microseconds"),
        ("sequence_batching", "state", "dims"),
        ("ensemble_scheduling", "step", "model_version"),
        ("model_warmup", "inputs", "dims"),
    }
)

# Fields our protobuf has and Triton 2.51's does not: left out while at their default, as
# Triton 2.51 cannot print them.
_NEWER_THAN_TRITON: Final[frozenset[tuple[str, ...]]] = frozenset(
    {("ensemble_scheduling", "max_inflight_requests")}
)

_INT64_TYPES: Final = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def config_to_json(config: Message) -> dict[str, Any]:
    """Triton's JSON rendering of a (normalized) ModelConfig.

    An all-default config renders as ``{}`` (Triton answers an empty body for it).
    """
    if config.ByteSize() == 0:
        return {}
    return _message(config, ())


def _message(message: Message, path: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        here = (*path, field.name)
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            key_field = field.message_type.fields_by_name["key"]
            out[field.name] = {
                _map_key(key_field, k): _value(value_field, value[k], here)
                for k in sorted(value, key=_sort_key)
            }
        elif _is_repeated(field):
            out[field.name] = [_value(field, item, here) for item in value]
        elif field.has_presence:
            if message.HasField(field.name):
                out[field.name] = _value(field, value, here)
        elif here not in _NEWER_THAN_TRITON or value:
            out[field.name] = _value(field, value, here)
    return out


def _value(field: FieldDescriptor, value: Any, path: tuple[str, ...]) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(value, path)
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    if field.type in _INT64_TYPES:
        return int(value) if path in _INT64_AS_NUMBER else str(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    if field.type == FieldDescriptor.TYPE_FLOAT:
        return _float(value, single=True)
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        return _float(value, single=False)
    return value


def _float(value: float, *, single: bool) -> float | str:
    """protobuf JSON: NaN and infinities as strings; float32 as its shortest round-trip form."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if not single:
        return value
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack("<f", short) == packed:
            return short
    return value


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 7 dropped ``label``; ``is_repeated`` came in 5.29 (older ones have only label)
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _is_map(field: FieldDescriptor) -> bool:
    return bool(
        _is_repeated(field)
        and field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type.GetOptions().map_entry
    )


def _map_key(field: FieldDescriptor, key: Any) -> str:
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if key else "false"
    return str(key)


def _sort_key(key: Any) -> tuple[int, Any]:
    """Stable map order (protobuf maps have none; C++ prints them sorted by key)."""
    return (0, key) if isinstance(key, int | bool) else (1, str(key))
