"""Serving from an S3 store (a real S3 protocol server: moto's server mode over HTTP):
many models through a small budget, a restart that downloads nothing, hostile archives."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelyard.testing import ServerFailed, running_server, start_server
from tests.factories.onnx_models import add_sub, mlp
from tests.integration.s3_server import MotoServer
from tests.integration.test_on_demand import WIDE, _metrics, _mlp_body, books_within
from tests.integration.traffic import rss_tree, traffic_with_peak_rss


def _artifact(name: str, version: int, model: bytes, config: str | None = None) -> bytes:
    """``<name>_<version>.tar.gz`` as the deploy loop packs it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        files = {f"{name}/{version}/model.onnx": model}
        if config is not None:
            files[f"{name}/config.pbtxt"] = config.encode()
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _env(moto: MotoServer) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def test_many_models_from_s3_through_a_small_budget(
    moto_server: MotoServer, s3: Any, bucket: str
) -> None:
    n_models, budget = 24, 80 * 2**20
    for i in range(n_models):
        s3.put_object(
            Bucket=bucket,
            Key=f"models/m{i}_1.tar.gz",
            Body=_artifact(f"m{i}", 1, mlp(WIDE, seed=i)),
        )
    s3.put_object(Bucket=bucket, Key="models/warm_1.tar.gz", Body=_artifact("warm", 1, mlp()))
    url = f"s3://{moto_server.host_port}/{bucket}/models"
    with running_server(url, ["--memory-budget", str(budget)], env=_env(moto_server)) as server:
        http = httpx.Client(base_url=server.base_url, timeout=60)
        assert http.post("/v2/models/warm/infer", json=_mlp_body()).status_code == 200
        base = rss_tree(server.process.pid)
        rng = np.random.default_rng(1)
        names = [f"m{int(i) - 1}" for i in rng.zipf(1.2, 400) if i <= n_models][:250]
        codes, peak = traffic_with_peak_rss(server, names, _mlp_body())
        assert codes == [200] * len(names)
        m = _metrics(server.base_url)
        hits, misses = (
            m["modelyard_model_cache_hits_total"],
            m["modelyard_model_cache_misses_total"],
        )
        assert hits + misses >= len(names) and hits > 0 and misses > 0
        assert m["modelyard_model_evictions_total"] > 0
        assert m["modelyard_model_load_seconds_count"] >= len(set(names))
        assert m["modelyard_model_download_seconds_count"] >= len(set(names))
        assert books_within(server.base_url, budget)
        assert peak - base <= budget + 48 * 2**20, (peak - base) / 2**20
        http.close()


def test_restart_downloads_nothing_again(
    moto_server: MotoServer, s3: Any, bucket: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="m/add_sub_1.tar.gz", Body=_artifact("add_sub", 1, add_sub()))
    url = f"s3://{moto_server.host_port}/{bucket}/m"
    body = {
        "inputs": [
            {"name": n, "shape": [16], "datatype": "FP32", "data": [1.0] * 16}
            for n in ("INPUT0", "INPUT1")
        ]
    }
    cache = ["--model-cache-dir", str(tmp_path / "cache")]
    fetches = []
    for _ in range(2):
        with running_server(url, cache, env=_env(moto_server)) as server:
            r = httpx.post(f"{server.base_url}/v2/models/add_sub/infer", json=body)
            assert r.status_code == 200
            fetches.append(_metrics(server.base_url)["modelyard_model_download_seconds_count"])
    assert fetches == [1, 0]
    gets = [line for line in moto_server.requests() if f"/{bucket}/m/add_sub_1.tar.gz" in line]
    assert len(gets) == 1  # the S3 server's own log: one download across both runs


def test_hostile_and_corrupt_archives_are_clear_errors(
    moto_server: MotoServer, s3: Any, bucket: str
) -> None:
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket=bucket, Key="x/evil_1.tar.gz", Body=evil.getvalue())
    s3.put_object(Bucket=bucket, Key="x/corrupt_1.tar.gz", Body=b"\x1f\x8b not really gzip")
    s3.put_object(Bucket=bucket, Key="x/good_1.tar.gz", Body=_artifact("good", 1, mlp()))
    url = f"s3://{moto_server.host_port}/{bucket}/x"
    with (
        running_server(url, env=_env(moto_server)) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        r = http.post("/v2/models/evil/infer", json=_mlp_body())
        assert r.status_code == 400 and "../../escape.txt" in r.json()["error"], r.text
        r = http.post("/v2/models/corrupt/infer", json=_mlp_body())
        assert r.status_code == 400 and "corrupt_1.tar.gz" in r.json()["error"], r.text
        assert http.post("/v2/models/good/infer", json=_mlp_body()).status_code == 200
        # refused at extraction: the index says so, with the reason, as for a failed load
        rows = {row["name"]: row for row in http.post("/v2/repository/index").json()}
        for name, why in (("evil", "../../escape.txt"), ("corrupt", "corrupt_1.tar.gz")):
            assert rows[name]["state"] == "UNAVAILABLE", rows[name]
            assert why in rows[name]["reason"], rows[name]
        assert rows["good"]["state"] == "READY"
        assert server.cache_dir is not None
        written = [p for p in server.cache_dir.rglob("*") if p.name == "escape.txt"]
        near = [d / "escape.txt" for d in (server.cache_dir, *server.cache_dir.parents[:2])]
        assert not written and not any(p.exists() for p in near)


def test_a_model_larger_than_the_disk_cache_is_refused_without_downloading_it(
    moto_server: MotoServer, s3: Any, bucket: str
) -> None:
    big = _artifact("big", 1, add_sub() + os.urandom(3 * 2**20))  # incompressible padding
    s3.put_object(Bucket=bucket, Key="q/big_1.tar.gz", Body=big)
    s3.put_object(Bucket=bucket, Key="q/small_1.tar.gz", Body=_artifact("small", 1, mlp()))
    url = f"s3://{moto_server.host_port}/{bucket}/q"
    with (
        running_server(url, ["--model-cache-size", "2MiB"], env=_env(moto_server)) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        for _ in range(2):  # every request, the same answer
            r = http.post("/v2/models/big/infer", json=_mlp_body())
            assert r.status_code == 400, r.text
            assert "more than the model cache's 2097152 bytes" in r.json()["error"], r.text
        assert http.post("/v2/models/small/infer", json=_mlp_body()).status_code == 200
        rows = {row["name"]: row for row in http.post("/v2/repository/index").json()}
        assert (
            rows["big"]["state"] == "UNAVAILABLE"
            and "nothing was downloaded" in rows["big"]["reason"]
        )
    fetched = [line for line in moto_server.requests() if "big_1.tar.gz" in line]
    assert fetched == []  # the S3 server itself saw no download of it


def test_requests_for_unknown_models_do_not_list_the_store_each(
    moto_server: MotoServer, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="u/good_1.tar.gz", Body=_artifact("good", 1, mlp()))
    url = f"s3://{moto_server.host_port}/{bucket}/u"
    with (
        running_server(url, env=_env(moto_server)) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        before = len([r for r in moto_server.requests() if f"/{bucket}?" in r])
        for _ in range(30):
            assert http.post("/v2/models/ghost/infer", json=_mlp_body()).status_code == 404
        listings = len([r for r in moto_server.requests() if f"/{bucket}?" in r]) - before
        assert 1 <= listings <= 3  # one listing a second for the same unknown name


def test_unreachable_store_fails_at_start_with_a_clear_error(tmp_path: Path) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    with pytest.raises(ServerFailed) as info:
        start_server("s3://127.0.0.1:9/bucket/models", env=env, timeout=60)
    text = str(info.value)
    assert "cannot start: cannot list model store 's3://127.0.0.1:9/bucket/models'" in text
    assert "Traceback" not in text
