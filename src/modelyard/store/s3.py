"""S3 and S3-compatible stores, through boto3: the only module that imports it.

URL forms (Triton's): ``s3://bucket/prefix``; ``s3://host:port/bucket/prefix`` (plain
HTTP); ``s3://https://host:port/bucket/prefix``. Credentials, region and (for the first
form) the endpoint come from the usual AWS configuration: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared config
files, ``AWS_DEFAULT_REGION`` or ``AWS_REGION``, ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), instance and container roles. An endpoint in the URL uses
path-style addressing, which every S3-compatible server understands.
"""

from __future__ import annotations

import builtins
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.errors import ConfigError, MissingDependency
from modelyard.store.base import StoreError, StoreObject

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["S3Location", "S3Store", "parse_s3_url"]

_HOST_PORT = re.compile(r"[0-9A-Za-z.\-]+(:[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str  # without leading or trailing '/'; "" is the bucket's root
    endpoint_url: str | None = None  # from the URL; None: AWS configuration decides

    def url(self) -> str:
        """The location back in Triton's URL form."""
        path = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        if self.endpoint_url is None:
            return f"s3://{path}"
        if self.endpoint_url.startswith("http://"):
            return f"s3://{self.endpoint_url.removeprefix('http://')}/{path}"
        return f"s3://{self.endpoint_url}/{path}"


def parse_s3_url(url: str) -> S3Location:
    """Split an ``s3://`` URL in any of Triton's forms into bucket, prefix and endpoint."""
    if not url.startswith("s3://"):
        raise ConfigError(f"model store '{url}' is not an s3:// URL")
    rest = url.removeprefix("s3://")
    scheme = None
    for candidate in ("http", "https"):
        if rest.startswith(candidate + "://"):
            scheme, rest = candidate, rest.removeprefix(candidate + "://")
    first, _, path = rest.partition("/")
    endpoint = None
    if scheme is not None or ":" in first:
        if not _HOST_PORT.fullmatch(first):
            raise ConfigError(f"model store '{url}': '{first}' is not a host:port")
        endpoint = f"{scheme or 'http'}://{first}"
        bucket, _, prefix = path.partition("/")
    else:
        bucket, prefix = first, path
    if not bucket:
        raise ConfigError(f"model store '{url}' names no bucket")
    return S3Location(bucket=bucket, prefix=prefix.strip("/"), endpoint_url=endpoint)


def _client(location: S3Location) -> S3Client:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MissingDependency("boto3", "s3") from None
    # botocore reads AWS_DEFAULT_REGION; AWS_REGION is what the AWS SDKs for other languages
    # and the SageMaker containers set
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"} if location.endpoint_url else {},
    )
    session = boto3.session.Session()
    return session.client(
        "s3", region_name=region, endpoint_url=location.endpoint_url, config=config
    )


class S3Store:
    """Objects are the keys under ``s3://bucket/prefix/``; keys are relative to the prefix."""

    def __init__(self, location: S3Location, client: S3Client | None = None) -> None:
        self.location = location
        self._client = client if client is not None else _client(location)
        self._prefix = f"{location.prefix}/" if location.prefix else ""

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        return cls(parse_s3_url(url))

    def __repr__(self) -> str:
        return f"S3Store({self.describe()!r})"

    def describe(self) -> str:
        return self.location.url()

    def list(self) -> builtins.list[StoreObject]:
        from botocore.exceptions import BotoCoreError, ClientError

        objects: builtins.list[StoreObject] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=self._prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"].removeprefix(self._prefix)
                    if not key or key.endswith("/"):  # the prefix itself, or a folder marker
                        continue
                    etag = item.get("ETag", "").strip('"')
                    objects.append(StoreObject(key=key, size=item.get("Size", 0), etag=etag))
        except (BotoCoreError, ClientError) as err:
            raise StoreError(f"cannot list model store '{self.describe()}': {err}") from err
        return objects

    def fetch(self, key: str, dest: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.download_file(self.location.bucket, self._prefix + key, str(dest))
        except (BotoCoreError, ClientError) as err:
            raise StoreError(
                f"cannot download '{key}' from model store '{self.describe()}': {err}"
            ) from err
