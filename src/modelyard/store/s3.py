"""S3 and S3-compatible stores, through boto3: the only module that imports it.

URL forms (Triton's): ``s3://bucket/prefix``; ``s3://host:port/bucket/prefix`` (plain
HTTP); ``s3://https://host:port/bucket/prefix``. Credentials, region and (for the first
form) the endpoint come from the usual AWS configuration: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared config
files, ``AWS_DEFAULT_REGION`` or ``AWS_REGION``, ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), instance and container roles. An endpoint in the URL uses
path-style addressing, which every S3-compatible server understands.

Writes (the deploy loop): an object becomes visible only once S3 has all of it (a PUT, or
the completion of a multipart upload), so readers never see half an artifact. Publishing
sends ``If-None-Match: *``, so S3 itself refuses to overwrite an existing key, and a SHA-256
checksum with every part, so S3 refuses bytes that changed on the way; the object also
carries its hex digest as ``x-amz-meta-sha256``, checked after the upload.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import ConfigError, MissingDependency
from modelyard.store.base import ObjectExists, Progress, StoreError, StoreObject, is_safe_key

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["S3Location", "S3Store", "parse_s3_url"]

_HOST_PORT = re.compile(r"[0-9A-Za-z.\-]+(:[0-9]{1,5})?")
PART_BYTES = 16 << 20  # multipart part size; smaller files go up in one PUT
_UPLOAD_THREADS = 4
_COPY_LIMIT = 5 << 30  # CopyObject's limit; larger objects are copied in parts


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
                    modified = item.get("LastModified")
                    objects.append(
                        StoreObject(
                            key=key,
                            size=item.get("Size", 0),
                            etag=etag,
                            modified=modified.timestamp() if modified else None,
                        )
                    )
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

    # ---- writing (the deploy loop) -------------------------------------------------------

    def _key(self, key: str) -> str:
        if not is_safe_key(key):
            raise StoreError(f"model store '{self.describe()}': unsafe key '{key}'")
        return self._prefix + key

    def stat(self, key: str) -> StoreObject | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self._client.head_object(Bucket=self.location.bucket, Key=self._key(key))
        except ClientError as err:
            if _code(err) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StoreError(
                f"cannot read '{key}' from model store '{self.describe()}': {err}"
            ) from err
        except BotoCoreError as err:
            raise StoreError(
                f"cannot read '{key}' from model store '{self.describe()}': {err}"
            ) from err
        modified = head.get("LastModified")
        return StoreObject(
            key=key,
            size=head.get("ContentLength", 0),
            etag=head.get("ETag", "").strip('"'),
            modified=modified.timestamp() if modified else None,
        )

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self._client.get_object(Bucket=self.location.bucket, Key=self._key(key))
            return body["Body"].read()
        except (BotoCoreError, ClientError) as err:
            raise StoreError(
                f"cannot read '{key}' from model store '{self.describe()}': {err}"
            ) from err

    def write_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(
                Bucket=self.location.bucket,
                Key=self._key(key),
                Body=data,
                ChecksumSHA256=_b64_sha256(data),
            )
        except (BotoCoreError, ClientError) as err:
            raise StoreError(
                f"cannot write '{key}' to model store '{self.describe()}': {err}"
            ) from err

    def publish(
        self, key: str, source: Path, *, sha256: str, progress: Progress | None = None
    ) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(key)
        size = source.stat().st_size
        try:
            if size <= PART_BYTES:
                data = source.read_bytes()
                _check_sha256(source, hashlib.sha256(data).hexdigest(), sha256)
                self._client.put_object(
                    Bucket=self.location.bucket,
                    Key=full,
                    Body=data,
                    ChecksumSHA256=_b64_sha256(data),
                    Metadata={"sha256": sha256},
                    IfNoneMatch="*",
                )
                if progress is not None:
                    progress(len(data))
            else:
                _check_sha256(source, _file_sha256(source), sha256)
                self._multipart(full, source, size, sha256, progress)
        except ClientError as err:
            if _code(err) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise ObjectExists(
                    f"'{key}' already exists in model store '{self.describe()}'"
                ) from None
            raise StoreError(
                f"cannot upload '{key}' to model store '{self.describe()}': {err}"
            ) from err
        except BotoCoreError as err:
            raise StoreError(
                f"cannot upload '{key}' to model store '{self.describe()}': {err}"
            ) from err
        stored = self._client.head_object(Bucket=self.location.bucket, Key=full)
        recorded = stored.get("Metadata", {}).get("sha256")
        if stored.get("ContentLength") != size or recorded != sha256:
            raise StoreError(
                f"'{key}' in model store '{self.describe()}' does not hold what was uploaded "
                f"({stored.get('ContentLength')} bytes, sha256 {recorded}; sent {size} bytes, "
                f"sha256 {sha256})"
            )

    def _multipart(
        self, full: str, source: Path, size: int, sha256: str, progress: Progress | None
    ) -> None:
        bucket = self.location.bucket
        upload = self._client.create_multipart_upload(
            Bucket=bucket, Key=full, ChecksumAlgorithm="SHA256", Metadata={"sha256": sha256}
        )
        upload_id = upload["UploadId"]

        def send(number: int) -> dict[str, Any]:
            with open(source, "rb") as f:
                f.seek((number - 1) * PART_BYTES)
                data = f.read(PART_BYTES)
            checksum = _b64_sha256(data)
            part = self._client.upload_part(
                Bucket=bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
            if progress is not None:
                progress(len(data))
            return {"PartNumber": number, "ETag": part["ETag"], "ChecksumSHA256": checksum}

        count = (size + PART_BYTES - 1) // PART_BYTES
        try:
            with ThreadPoolExecutor(_UPLOAD_THREADS) as pool:
                parts = list(pool.map(send, range(1, count + 1)))
            self._client.complete_multipart_upload(
                Bucket=bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                IfNoneMatch="*",
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the upload's own error is the one to report
                self._client.abort_multipart_upload(Bucket=bucket, Key=full, UploadId=upload_id)
            raise

    def move(self, key: str, dest: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, source, target = self.location.bucket, self._key(key), self._key(dest)
        try:
            head = self._client.head_object(Bucket=bucket, Key=source)
            if head.get("ContentLength", 0) < _COPY_LIMIT:
                self._client.copy_object(
                    Bucket=bucket,
                    Key=target,
                    CopySource={"Bucket": bucket, "Key": source},
                    MetadataDirective="COPY",
                )
            else:  # multipart copy; the metadata is given again
                self._client.copy(
                    {"Bucket": bucket, "Key": source},
                    bucket,
                    target,
                    ExtraArgs={
                        "Metadata": head.get("Metadata", {}),
                        "MetadataDirective": "REPLACE",
                    },
                )
            self._client.delete_object(Bucket=bucket, Key=source)
        except (BotoCoreError, ClientError) as err:
            raise StoreError(
                f"cannot move '{key}' to '{dest}' in model store '{self.describe()}': {err}"
            ) from err

    def download(self, key: str, dest: Path, progress: Progress | None = None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.download_file(
                self.location.bucket, self._key(key), str(dest), Callback=progress
            )
        except (BotoCoreError, ClientError) as err:
            raise StoreError(
                f"cannot download '{key}' from model store '{self.describe()}': {err}"
            ) from err


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(source: Path, found: str, claimed: str) -> None:
    if found != claimed:
        raise StoreError(f"'{source}' has the sha256 {found}, not {claimed}: it changed")


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
