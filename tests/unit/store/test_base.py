"""open_store's URL forms (Triton's), S3 URL parsing, and what importing the package costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import modelyard.store as store_pkg
from modelyard.errors import ConfigError, Unsupported
from modelyard.store import LocalStore, StoreError, open_store
from modelyard.store.base import is_safe_key
from modelyard.store.s3 import S3Location, parse_s3_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", S3Location("bucket", "")),
        ("s3://bucket/", S3Location("bucket", "")),
        ("s3://bucket/models/prod/", S3Location("bucket", "models/prod")),
        ("s3://127.0.0.1:9000/bucket/p", S3Location("bucket", "p", "http://127.0.0.1:9000")),
        ("s3://minio.local:9000/bucket", S3Location("bucket", "", "http://minio.local:9000")),
        (
            "s3://https://s3.example.com:443/bucket/a/b",
            S3Location("bucket", "a/b", "https://s3.example.com:443"),
        ),
        ("s3://http://host:80/b/p", S3Location("b", "p", "http://host:80")),
    ],
)
def test_parse_s3_url(url: str, expected: S3Location) -> None:
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    "url", ["s3://bucket/p", "s3://127.0.0.1:9000/bucket/p", "s3://https://h:443/b/p"]
)
def test_s3_url_round_trips(url: str) -> None:
    assert parse_s3_url(url).url() == url


@pytest.mark.parametrize(
    "url", ["s3://", "s3://host:9000", "s3://host:9000/", "s3://https://", "s3://h o:1/b"]
)
def test_bad_s3_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="model store"):
        parse_s3_url(url)


def test_local_forms(tmp_path: Path) -> None:
    for url in (str(tmp_path), f"file://{tmp_path}", f"file://localhost{tmp_path}"):
        store = open_store(url)
        assert isinstance(store, LocalStore)
        assert store.root == tmp_path


def test_other_schemes_are_unsupported() -> None:
    with pytest.raises(Unsupported, match="'gs://' scheme is not supported"):
        open_store("gs://bucket/models")


def test_missing_local_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is not a directory"):
        open_store(str(tmp_path / "missing")).list()


@pytest.mark.parametrize(
    ("key", "safe"),
    [
        ("m/1/model.onnx", True),
        ("m_1.tar.gz", True),
        ("", False),
        ("/etc/passwd", False),
        ("m/../x", False),
        ("m//x", False),
        ("./m", False),
        ("m\\..\\x", False),
    ],
)
def test_is_safe_key(key: str, safe: bool) -> None:
    assert is_safe_key(key) is safe


def test_importing_the_store_does_not_import_boto3() -> None:
    code = (
        "import sys, modelyard.store; "
        "from modelyard.store import open_store; "
        "open_store('/tmp'); "
        "assert not [m for m in sys.modules if m.startswith(('boto3', 'botocore'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names() -> None:
    assert sorted(store_pkg.__all__) == [
        "ArchiveError",
        "ArchiveLayoutError",
        "ArchiveTooLarge",
        "CacheStats",
        "CorruptArchive",
        "LocalStore",
        "MemoryStore",
        "ModelCache",
        "ObjectExists",
        "Progress",
        "RESERVED_FOLDER",
        "Store",
        "StoreError",
        "StoreModel",
        "StoreObject",
        "UnsafeArchiveMember",
        "VersionSource",
        "WritableStore",
        "catalog",
        "open_store",
        "open_writable_store",
        "parse_artifact_name",
    ]
    for name in store_pkg.__all__:
        assert getattr(store_pkg, name) is not None
