"""The few KServe v2 calls ``modelyard test`` makes, over one keep-alive connection.

Tensors travel with the binary tensor extension both ways, so every datatype round-trips
exactly (BYTES that are not UTF-8, NaN, BF16), as tritonclient sends them.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from modelyard.datatypes import numpy_dtype
from modelyard.types import Array, Tensor
from modelyard.wire.v2 import decode_infer_response, encode_infer_request

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
    def __init__(
        self, host: str, port: int, timeout: float = 120.0, headers: dict[str, str] | None = None
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = dict(headers or {})  # sent with every request (access credentials)
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
                self._conn.request(
                    method, path, body=body, headers={**self.headers, **(headers or {})}
                )
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
        tensors = [
            Tensor(name, datatype, list(array.shape), _typed(datatype, array))
            for name, datatype, array in inputs
        ]
        body, head = encode_infer_request(tensors, outputs, parameters)
        status, headers, data = self._request(
            "POST",
            _model_path(model, version) + "/infer",
            body,
            {"Content-Type": "application/octet-stream", _HEADER: str(head)},
        )
        if status != 200:
            raise InferFailed(status, _error_text(data))
        length = headers.get(_HEADER.lower())
        answer = decode_infer_response(data, int(length) if length is not None else None)
        return {t.name: Output(t.datatype, tuple(t.shape), t.data) for t in answer}


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


def _typed(datatype: str, array: Array) -> Array:
    """A test case's values as the datatype's array (BYTES: an object array of bytes)."""
    if datatype == "BYTES":
        out = np.empty(array.size, dtype=object)
        out[:] = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        return out.reshape(array.shape)
    return np.ascontiguousarray(array, dtype=numpy_dtype(datatype))
