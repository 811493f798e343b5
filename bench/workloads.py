"""The two benchmark models, their v2 requests (JSON and binary) and the in-process reference.

A ``Workload`` is one model with a fixed input: it builds the raw HTTP request bytes for either
encoding, checks a server's response against onnxruntime's own output, and times the work done
in-process (``session.run`` alone, and decode + run + encode) as the floor a server adds to.
"""

from __future__ import annotations

import http.client
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]

ENCODINGS = ("json", "binary", "grpc")
DEFAULT_ENCODINGS = ("json", "binary")  # grpc on request (--encodings json,binary,grpc)


def _factories() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.factories import onnx_models

    return onnx_models


@dataclass(frozen=True)
class Workload:
    name: str
    inputs: dict[str, np.ndarray]  # name -> array with the exact shape the request sends
    outputs: tuple[str, ...]
    config_body: str  # config.pbtxt without name/platform/backend lines

    @cached_property
    def onnx_bytes(self) -> bytes:
        f = _factories()
        return bytes(f.mlp() if self.name == "mlp" else f.add_sub())

    @cached_property
    def session(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        return ort.InferenceSession(self.onnx_bytes, so, providers=["CPUExecutionProvider"])

    @cached_property
    def expected(self) -> dict[str, np.ndarray]:
        got = self.session.run(list(self.outputs), self.inputs)
        return dict(zip(self.outputs, got, strict=True))

    # -- requests ---------------------------------------------------------------------------

    def body(self, encoding: str) -> tuple[bytes, dict[str, str]]:
        """The request body and the extra headers it needs."""
        if encoding == "json":
            doc = {
                "inputs": [
                    {
                        "name": n,
                        "shape": list(a.shape),
                        "datatype": "FP32",
                        "data": a.ravel().tolist(),
                    }
                    for n, a in self.inputs.items()
                ]
            }
            return orjson.dumps(doc), {"Content-Type": "application/json"}
        if encoding == "binary":
            head = {
                "inputs": [
                    {
                        "name": n,
                        "shape": list(a.shape),
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": a.nbytes},
                    }
                    for n, a in self.inputs.items()
                ],
                "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in self.outputs],
            }
            header = orjson.dumps(head)
            raw = b"".join(a.tobytes() for a in self.inputs.values())
            return header + raw, {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            }
        if encoding == "grpc":
            return self.grpc_request().SerializeToString(), {}
        raise ValueError(f"unknown encoding {encoding!r}")

    def grpc_request(self, model_name: str | None = None) -> Any:
        """Triton's ModelInferRequest, tensors in raw_input_contents (as tritonclient sends)."""
        from tritonclient.grpc import service_pb2 as pb

        message = pb.ModelInferRequest(model_name=model_name or self.name)
        for n, a in self.inputs.items():
            message.inputs.add(name=n, datatype="FP32", shape=list(a.shape))
            message.raw_input_contents.append(a.tobytes())
        return message

    def request(self, encoding: str, port: int, model_name: str | None = None) -> bytes:
        """What the load generator sends: raw HTTP bytes, or a serialised ModelInferRequest."""
        if encoding == "grpc":
            return bytes(self.grpc_request(model_name).SerializeToString())
        return self.http_request(encoding, port, model_name)

    def check_grpc(self, port: int, model_name: str | None = None) -> str | None:
        """One ModelInfer; None if the outputs match onnxruntime's, else what went wrong."""
        import grpc
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                answer = stub.ModelInfer(self.grpc_request(model_name), timeout=30)
        except grpc.RpcError as e:
            return f"gRPC {e.code()}: {e.details()}"
        got = {
            o.name: np.frombuffer(raw, dtype=np.float32)
            for o, raw in zip(answer.outputs, answer.raw_output_contents, strict=False)
        }
        for name, want in self.expected.items():
            if name not in got or not np.allclose(got[name], want.ravel(), rtol=1e-4, atol=1e-5):
                return f"output {name} missing or differs from onnxruntime's"
        return None

    def http_request(self, encoding: str, port: int, model_name: str | None = None) -> bytes:
        body, headers = self.body(encoding)
        lines = [
            f"POST /v2/models/{model_name or self.name}/infer HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            *(f"{k}: {v}" for k, v in headers.items()),
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def check(self, port: int, encoding: str, model_name: str | None = None) -> str | None:
        """Send one request; None if the outputs match onnxruntime's, else what went wrong."""
        body, headers = self.body(encoding)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", f"/v2/models/{model_name or self.name}/infer", body, headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                return f"HTTP {resp.status}: {data[:200]!r}"
            header_len = resp.getheader("Inference-Header-Content-Length")
            if encoding == "binary" and header_len is None:
                return "binary request answered without binary outputs (no header length)"
            got = _decode_outputs(data, header_len)
        except Exception as e:  # a peer that cannot speak the encoding fails in many ways
            return f"{type(e).__name__}: {e}"
        finally:
            conn.close()
        for name, want in self.expected.items():
            if name not in got:
                return f"output {name} missing (got {sorted(got)})"
            if got[name].size != want.size or not np.allclose(
                got[name].ravel(), want.ravel(), rtol=1e-4, atol=1e-5
            ):
                return f"output {name} differs from onnxruntime's"
        return None

    # -- in-process reference ---------------------------------------------------------------

    def inprocess(self, seconds: float = 1.0) -> dict[str, float]:
        """p50 (µs) of session.run alone and of v2 decode + run + encode, in this process."""
        sess, outputs = self.session, list(self.outputs)
        feeds = self.inputs
        json_body, _ = self.body("json")
        bin_body, bin_headers = self.body("binary")
        hlen = int(bin_headers["Inference-Header-Content-Length"])

        def run() -> None:
            sess.run(outputs, feeds)

        def json_roundtrip() -> None:
            req = orjson.loads(json_body)
            feed = {
                i["name"]: np.asarray(i["data"], dtype=np.float32).reshape(i["shape"])
                for i in req["inputs"]
            }
            res = sess.run(outputs, feed)
            orjson.dumps(
                {
                    "model_name": self.name,
                    "outputs": [
                        {"name": n, "datatype": "FP32", "shape": list(r.shape), "data": r.ravel()}
                        for n, r in zip(outputs, res, strict=True)
                    ],
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )

        def binary_roundtrip() -> None:
            req = orjson.loads(bin_body[:hlen])
            off, feed = hlen, {}
            for i in req["inputs"]:
                size = i["parameters"]["binary_data_size"]
                buf = bin_body[off : off + size]
                feed[i["name"]] = np.frombuffer(buf, dtype=np.float32).reshape(i["shape"])
                off += size
            res = sess.run(outputs, feed)
            head = orjson.dumps(
                {
                    "model_name": self.name,
                    "outputs": [
                        {
                            "name": n,
                            "datatype": "FP32",
                            "shape": list(r.shape),
                            "parameters": {"binary_data_size": r.nbytes},
                        }
                        for n, r in zip(outputs, res, strict=True)
                    ],
                }
            )
            b"".join([head, *(r.tobytes() for r in res)])

        return {
            "run_us": _p50_us(run, seconds),
            "json_us": _p50_us(json_roundtrip, seconds),
            "binary_us": _p50_us(binary_roundtrip, seconds),
        }


def _p50_us(fn: Callable[[], None], seconds: float) -> float:
    for _ in range(200):
        fn()
    samples: list[float] = []
    end = time.perf_counter() + seconds
    clock = time.perf_counter
    while clock() < end:
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return statistics.median(samples) * 1e6


def _decode_outputs(data: bytes, header_len: str | None) -> dict[str, np.ndarray]:
    if header_len is None:
        doc = orjson.loads(data)
        return {o["name"]: np.asarray(o["data"], dtype=np.float32) for o in doc["outputs"]}
    hlen = int(header_len)
    doc = orjson.loads(data[:hlen])
    off, out = hlen, {}
    for o in doc["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[o["name"]] = np.asarray(o["data"], dtype=np.float32)
        else:
            out[o["name"]] = np.frombuffer(data[off : off + size], dtype=np.float32)
            off += size
    return out


def _fp32(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _io(kind: str, name: str, dims: str) -> str:
    return f'{kind} [{{ name: "{name}" data_type: TYPE_FP32 dims: [{dims}] }}]\n'


WORKLOADS: dict[str, Workload] = {
    "mlp": Workload(
        name="mlp",
        inputs={"INPUT": _fp32((1, 64), 1)},
        outputs=("OUTPUT",),
        config_body="max_batch_size: 8\n"
        + _io("input", "INPUT", "64")
        + _io("output", "OUTPUT", "10"),
    ),
    "add_sub": Workload(
        name="add_sub",
        inputs={"INPUT0": _fp32((16,), 2), "INPUT1": _fp32((16,), 3)},
        outputs=("OUTPUT0", "OUTPUT1"),
        config_body="max_batch_size: 0\n"
        + "input [\n"
        + '  { name: "INPUT0" data_type: TYPE_FP32 dims: [16] },\n'
        + '  { name: "INPUT1" data_type: TYPE_FP32 dims: [16] }\n]\n'
        + "output [\n"
        + '  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [16] },\n'
        + '  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [16] }\n]\n',
    ),
}
