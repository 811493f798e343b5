"""S3 end to end against a real S3 protocol server: list, catalog, materialize, restart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from modelyard.repository import load_entry_config, scan_model
from modelyard.store import ModelCache, StoreError, catalog, open_store
from modelyard.store.s3 import S3Store
from tests.factories.onnx_models import add_sub, mlp
from tests.integration.s3_server import MotoServer
from tests.unit.store.archives import targz

MiB = 1 << 20

ADD_SUB = """
name: "add_sub"
platform: "onnxruntime_onnx"
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
output [
  { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ], label_filename: "labels.txt" },
  { name: "OUTPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
"""

MLP = """
name: "fraud_mlp"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "INPUT", data_type: TYPE_FP32, dims: [ 64 ] } ]
output [ { name: "OUTPUT", data_type: TYPE_FP32, dims: [ 10 ] } ]
version_policy: { latest: { num_versions: %d } }
"""


def mlp_artifact(version: int, *, nested: bool = True) -> bytes:
    top = "fraud_mlp/" if nested else ""
    return targz(
        {
            f"{top}config.pbtxt": (MLP % version).encode(),
            f"{top}{version}/model.onnx": mlp(seed=version),
        }
    )


def upload_repository(s3: Any, bucket: str, prefix: str = "models") -> None:
    put = {
        f"{prefix}/add_sub/config.pbtxt": ADD_SUB.encode(),
        f"{prefix}/add_sub/labels.txt": b"".join(b"label%d\n" % i for i in range(16)),
        f"{prefix}/add_sub/1/model.onnx": add_sub(),
        f"{prefix}/add_sub/2/model.onnx": add_sub(),
        f"{prefix}/fraud_mlp_1.tar.gz": mlp_artifact(1),
        f"{prefix}/fraud_mlp_2.tar.gz": mlp_artifact(2, nested=False),  # SageMaker-style
        f"{prefix}/fraud_mlp_latest.tar.gz": b"ignored: no numeric version",
        f"{prefix}/README.md": b"files at the root are ignored",
        f"{prefix}/empty/": b"",  # a console's folder marker
        "elsewhere/other/1/model.onnx": b"outside the prefix",
    }
    for key, body in put.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def url(moto_server: MotoServer, bucket: str, prefix: str = "models") -> str:
    return f"s3://{moto_server.host_port}/{bucket}/{prefix}"


def object_gets(moto_server: MotoServer, bucket: str) -> list[str]:
    """Object downloads in the server's access log (listings are GETs of the bucket)."""
    return [r for r in moto_server.requests() if f"GET /{bucket}/" in r and "list-type" not in r]


def test_list_and_catalog(moto_server: MotoServer, s3: Any, bucket: str) -> None:
    upload_repository(s3, bucket)
    store = open_store(url(moto_server, bucket))
    assert isinstance(store, S3Store)
    assert store.describe() == url(moto_server, bucket)
    keys = sorted(o.key for o in store.list())
    assert keys == [
        "README.md",
        "add_sub/1/model.onnx",
        "add_sub/2/model.onnx",
        "add_sub/config.pbtxt",
        "add_sub/labels.txt",
        "fraud_mlp_1.tar.gz",
        "fraud_mlp_2.tar.gz",
        "fraud_mlp_latest.tar.gz",
    ]
    models = catalog(store.list())
    assert list(models) == ["add_sub", "fraud_mlp"]
    assert list(models["add_sub"].versions) == [1, 2]
    assert list(models["fraud_mlp"].versions) == [1, 2]
    assert all(o.etag and '"' not in o.etag for o in store.list())


def test_materialize_loads_and_a_restart_downloads_nothing(
    moto_server: MotoServer, s3: Any, bucket: str, tmp_path: Path
) -> None:
    upload_repository(s3, bucket)
    store = open_store(url(moto_server, bucket))
    models = catalog(store.list())
    cache = ModelCache(tmp_path / "cache", 100 * MiB)

    with cache.materialized(store, models["add_sub"]) as folder:
        entry = scan_model(folder)
        assert (entry.name, entry.versions) == ("add_sub", (1, 2))
        assert load_entry_config(entry).name == "add_sub"  # labels.txt resolves inside
        assert (folder / "2/model.onnx").read_bytes() == add_sub()
    with cache.materialized(store, models["fraud_mlp"]) as folder:
        entry = scan_model(folder)
        assert (entry.name, entry.versions) == ("fraud_mlp", (1, 2))
        config = load_entry_config(entry)
        assert config.version_policy.latest.num_versions == 2  # the newest artifact's config
        assert (folder / "1/model.onnx").read_bytes() == mlp(seed=1)
        assert (folder / "2/model.onnx").read_bytes() == mlp(seed=2)
    assert cache.stats.downloads == 6
    assert len(object_gets(moto_server, bucket)) == 6

    restarted = ModelCache(tmp_path / "cache", 100 * MiB)
    store = open_store(url(moto_server, bucket))
    models = catalog(store.list())
    for name in ("add_sub", "fraud_mlp"):
        with restarted.materialized(store, models[name]) as folder:
            assert scan_model(folder).versions == (1, 2)
    assert restarted.stats.downloads == 0
    assert len(object_gets(moto_server, bucket)) == 6  # still only the first run's


def test_a_new_artifact_version_downloads_only_itself(
    moto_server: MotoServer, s3: Any, bucket: str, tmp_path: Path
) -> None:
    upload_repository(s3, bucket)
    store = open_store(url(moto_server, bucket))
    cache = ModelCache(tmp_path / "cache", 100 * MiB)
    with cache.materialized(store, catalog(store.list())["fraud_mlp"]):
        pass
    s3.put_object(Bucket=bucket, Key="models/fraud_mlp_3.tar.gz", Body=mlp_artifact(3))
    before = cache.stats.downloads
    model = catalog(store.list())["fraud_mlp"]
    assert list(model.versions) == [1, 2, 3]
    with cache.materialized(store, model) as folder:
        assert scan_model(folder).versions == (1, 2, 3)
        assert load_entry_config(scan_model(folder)).version_policy.latest.num_versions == 3
    assert cache.stats.downloads - before == 1


def test_endpoint_from_aws_configuration(
    moto_server: MotoServer,
    s3: Any,
    bucket: str,
    aws_env: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    upload_repository(s3, bucket, prefix="deep/models")
    aws_env.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    try:
        store = open_store(f"s3://{bucket}/deep/models")
        models = catalog(store.list())
        cache = ModelCache(tmp_path / "cache", 100 * MiB)
        with cache.materialized(store, models["add_sub"], versions=[2]) as folder:
            assert scan_model(folder).versions == (2,)
    finally:
        aws_env.delenv("AWS_ENDPOINT_URL")


def test_multipart_upload_etags(
    moto_server: MotoServer, s3: Any, bucket: str, tmp_path: Path
) -> None:
    payload = os.urandom(9 * MiB)  # incompressible: a multipart upload and ranged downloads
    archive = tmp_path / "big_7.tar.gz"
    archive.write_bytes(
        targz({"big/config.pbtxt": b'backend: "onnxruntime"\n', "big/7/model.onnx": payload})
    )
    s3.upload_file(str(archive), bucket, "big_7.tar.gz")
    store = open_store(f"s3://{moto_server.host_port}/{bucket}")
    (obj,) = store.list()
    assert "-" in obj.etag  # a multipart ETag is no MD5 of the content, but still stable
    cache = ModelCache(tmp_path / "cache", 100 * MiB)
    with cache.materialized(store, catalog([obj])["big"]) as folder:
        assert (folder / "7/model.onnx").read_bytes() == payload
    assert (
        ModelCache(tmp_path / "cache", 100 * MiB)
        .materialize(store, catalog(store.list())["big"])
        .is_dir()
    )


def test_missing_bucket_is_a_store_error(moto_server: MotoServer, s3: Any) -> None:
    store = open_store(f"s3://{moto_server.host_port}/no-such-bucket/models")
    with pytest.raises(
        StoreError, match=r"cannot list model store 's3://.*/no-such-bucket/models'"
    ):
        store.list()


def test_missing_object_is_a_store_error(
    moto_server: MotoServer, s3: Any, bucket: str, tmp_path: Path
) -> None:
    store = open_store(f"s3://{moto_server.host_port}/{bucket}")
    with pytest.raises(StoreError, match=r"cannot download 'gone/1/model\.onnx'"):
        store.fetch("gone/1/model.onnx", tmp_path / "x")
