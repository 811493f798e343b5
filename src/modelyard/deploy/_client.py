"""The few KServe v2 calls ``modelyard test`` makes, over one keep-alive connection.

Tensors travel with the binary tensor extension both ways, so every datatype round-trips
exactly (BYTES that are not UTF-8, NaN, BF16), as tritonclient sends them.
"""

from __future__ import annotations

import http.client
import json
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from modelyard.datatypes import numpy_dtype
from modelyard.types import Array

__all__ = ["InferFailed", "Output", "V2Client"]

_HEADER = "Inference-Header-Content-Length"


class InferFailed(Exception):
    """The server answered an error: its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Output:
    datatype: str
    shape: tuple[int, ...]
    array: Array


class V2Client:
    def __init__(self, host: str, port: int, timeout: float = 120.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):  # a keep-alive connection the server closed: one retry
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                response = self._conn.getresponse()
                data = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str) -> Any:
        status, _, data = self._request(method, path, b"" if method == "POST" else None)
        if status != 200:
            raise InferFailed(status, _error_text(data))
        return json.loads(data)

    def index(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._json("POST", "/v2/repository/index")
        return rows

    def metadata(self, model: str, version: str = "") -> dict[str, Any]:
        meta: dict[str, Any] = self._json("GET", _model_path(model, version))
        return meta

    def infer(
        self,
        model: str,
        version: str,
        inputs: list[tuple[str, str, Array]],
        outputs: list[str],
        parameters: dict[str, Any] | None = None,
    ) -> dict[str, Output]:
        header: dict[str, Any] = {"inputs": []}
        chunks: list[bytes] = []
        for name, datatype, array in inputs:
            raw = _to_raw(datatype, array)
            header["inputs"].append(
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            )
            chunks.append(raw)
        if outputs:
            header["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
        else:
            header["parameters"] = {"binary_data_output": True}
        if parameters:
            header.setdefault("parameters", {}).update(parameters)
        head = json.dumps(header).encode()
        body = head + b"".join(chunks)
        status, headers, data = self._request(
            "POST",
            _model_path(model, version) + "/infer",
            body,
            {"Content-Type": "application/octet-stream", _HEADER: str(len(head))},
        )
        if status != 200:
            raise InferFailed(status, _error_text(data))
        return _decode(headers, data)


def _model_path(model: str, version: str) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return f"{path}/versions/{quote(version, safe='')}" if version else path


def _error_text(data: bytes) -> str:
    try:
        doc = json.loads(data)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])
    except ValueError:
        pass
    return data.decode(errors="replace")


def _to_raw(datatype: str, array: Array) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1).tolist():
            value = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(value)) + value)
        return b"".join(parts)
    dtype = numpy_dtype(datatype).newbyteorder("<")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _decode(headers: dict[str, str], data: bytes) -> dict[str, Output]:
    length = int(headers.get(_HEADER.lower(), len(data)))
    doc = json.loads(data[:length])
    offset = length
    out: dict[str, Output] = {}
    for item in doc.get("outputs", []):
        datatype = str(item["datatype"])
        shape = tuple(int(d) for d in item.get("shape", []))
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = data[offset : offset + int(size)]
            offset += int(size)
            array = _from_raw(datatype, shape, raw)
        else:
            array = _from_json(datatype, shape, item.get("data", []))
        out[str(item["name"])] = Output(datatype, shape, array)
    return out


def _from_raw(datatype: str, shape: tuple[int, ...], raw: bytes) -> Array:
    if datatype == "BYTES":
        items: list[bytes] = []
        pos = 0
        while pos + 4 <= len(raw):
            (n,) = struct.unpack_from("<I", raw, pos)
            items.append(raw[pos + 4 : pos + 4 + n])
            pos += 4 + n
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    dtype = numpy_dtype(datatype).newbyteorder("<")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(numpy_dtype(datatype))


def _from_json(datatype: str, shape: tuple[int, ...], data: list[Any]) -> Array:
    if datatype == "BYTES":
        arr = np.empty(len(data), dtype=object)
        arr[:] = [x.encode() if isinstance(x, str) else bytes(x) for x in data]
        return arr.reshape(shape)
    return np.asarray(data, dtype=numpy_dtype(datatype)).reshape(shape)
