"""The S3 store goes away in the middle of a model's download, and comes back.

A real server (on-demand, the default) over an S3 store: moto's server behind a throttling
TCP proxy (``ThrottledProxy``), so a large artifact takes seconds to arrive and the outage
(moto killed, the proxy's listener closed and its connections reset) is certain to land
mid-download: the test waits until part of the artifact has passed, never for a time.

While S3 is down: the request for the model being downloaded gets a clear error (503 in
Triton's ``{"error"}`` form, saying the download failed), nothing of the half-downloaded
artifact is left in the model cache as an entry (``entries/``) or a build (``tmp/``), the
model loaded before keeps serving, and a model that was unloaded but is in the disk cache
loads again without S3. When S3 is back (a new moto on the same port, the same objects), the
next request loads the model.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import orjson
import pytest

from modelyard.testing import free_port, running_server
from tests.factories.onnx_models import add_sub, mlp
from tests.integration.s3_server import ThrottledProxy, start_moto, stop_moto
from tests.integration.test_s3_serving import _artifact

ADD_SUB = """
name: "{name}"
backend: "onnxruntime"
max_batch_size: 0
input [
  {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] }},
  {{ name: "INPUT1", data_type: TYPE_FP32, dims: [ 16 ] }}
]
output [
  {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ] }},
  {{ name: "OUTPUT1", data_type: TYPE_FP32, dims: [ 16 ] }}
]
"""
BIG = (64, 2048, 2048, 10)  # ~17 MB of random FP32 weights: gzip cannot shrink them
ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def artifacts() -> dict[str, bytes]:
    return {
        "warm": _artifact("warm", 1, add_sub(), ADD_SUB.format(name="warm")),
        "cached": _artifact("cached", 1, add_sub(), ADD_SUB.format(name="cached")),
        "big": _artifact("big", 1, mlp(BIG, seed=3)),
    }


def _upload(moto_port: int, artifacts: dict[str, bytes]) -> None:
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", **_credentials())
    s3.create_bucket(Bucket="store")
    for name, data in artifacts.items():
        s3.put_object(Bucket="store", Key=f"models/{name}_1.tar.gz", Body=data)


def _credentials() -> dict[str, Any]:
    return {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }


ADD_SUB_BODY = {
    "inputs": [
        {"name": "INPUT0", "shape": [16], "datatype": "FP32", "data": [1.0] * 16},
        {"name": "INPUT1", "shape": [16], "datatype": "FP32", "data": [2.0] * 16},
    ]
}
BIG_BODY = {
    "inputs": [
        {"name": "INPUT", "shape": [1, 64], "datatype": "FP32", "data": np.ones(64).tolist()}
    ]
}


def _big_entries(cache: Path) -> list[Path]:
    """Cache entries made from the big model's artifact (an entry is renamed into
    ``entries/`` only once complete, with its ``meta.json``)."""
    entries = cache / "entries"
    if not entries.is_dir():
        return []
    return [
        e
        for e in entries.iterdir()
        if not (e / "meta.json").is_file()
        or "big_1.tar.gz" in orjson.loads((e / "meta.json").read_bytes())["keys"]
    ]


def test_s3_outage_mid_download(tmp_path: Path, artifacts: dict[str, bytes]) -> None:
    moto_port = free_port()
    log = tmp_path / "moto.log"
    moto = start_moto(moto_port, log)
    proxy = ThrottledProxy(moto_port)
    proxy.start()
    cache = tmp_path / "cache"
    url = f"s3://127.0.0.1:{proxy.port}/store/models"
    # the request waits for the load's own outcome (the failed download), not a timeout
    args = ["--model-cache-dir", str(cache), "--load-wait-timeout", "300"]
    try:
        _upload(moto_port, artifacts)
        with (
            running_server(url, args, env=ENV) as server,
            httpx.Client(base_url=server.base_url, timeout=300) as http,
        ):
            assert http.post("/v2/models/warm/infer", json=ADD_SUB_BODY).status_code == 200
            assert http.post("/v2/models/cached/infer", json=ADD_SUB_BODY).status_code == 200
            assert http.post("/v2/repository/models/cached/unload").status_code == 200

            # the big model's download starts, throttled; S3 goes away once part has passed
            proxy.rate = 1 << 20  # bytes/s per connection
            before = proxy.downstream
            answer: dict[str, httpx.Response] = {}

            def request_big() -> None:
                with httpx.Client(base_url=server.base_url, timeout=300) as own:
                    answer["big"] = own.post("/v2/models/big/infer", json=BIG_BODY)

            thread = threading.Thread(target=request_big)
            thread.start()
            while proxy.downstream - before < 2 << 20:  # 2 MiB of ~16 MB have arrived
                assert thread.is_alive(), answer
                thread.join(0.05)
            stop_moto(moto)
            proxy.stop()
            assert proxy.downstream - before < len(artifacts["big"])  # mid-download indeed

            # S3 is down: the loaded model serves, the one in the disk cache loads
            response = http.post("/v2/models/warm/infer", json=ADD_SUB_BODY)
            assert response.status_code == 200, response.text
            response = http.post("/v2/models/cached/infer", json=ADD_SUB_BODY)
            assert response.status_code == 200, response.text

            thread.join(300)
            assert not thread.is_alive()
            failed = answer["big"]
            assert failed.status_code == 503, failed.text
            assert failed.headers["content-type"] == "application/json"
            message = failed.json()["error"]
            assert "cannot download 'big_1.tar.gz'" in message, message
            assert str(cache) not in message  # no internal paths in an error
            # nothing half-written: no entry of the big model, no build left in tmp/
            assert _big_entries(cache) == []
            assert list((cache / "tmp").iterdir()) == []
            index = http.post("/v2/repository/index").json()
            big = [row for row in index if row["name"] == "big"]
            assert big and all(row.get("state") != "READY" for row in big), index
            assert http.get("/v2/health/ready").status_code == 200

            # S3 is back (a fresh moto on the same port, the same objects): big loads
            moto = start_moto(moto_port, log)
            _upload(moto_port, artifacts)
            proxy.rate = None
            proxy.start()
            response = http.post("/v2/models/big/infer", json=BIG_BODY)
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0]["shape"] == [1, 10]
            assert len(_big_entries(cache)) == 1
            assert http.post("/v2/models/warm/infer", json=ADD_SUB_BODY).status_code == 200
    finally:
        proxy.stop()
        stop_moto(moto)
