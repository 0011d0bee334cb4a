"""Where images go: one small interface, a local directory or S3-compatible storage.

Records keep storage keys, never URLs: a URL is made when a client reads the
job, so presigned S3 links are always fresh.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from shared.errors import StorageError
from shared.settings import Settings

# Jobs' images live under jobs/ (pruned, or a bucket lifecycle rule); the LoRA
# adapters keys bring live under loras/<owner>/, kept until their key deletes them.
JOBS_PREFIX = "jobs/"


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; StorageError when it cannot be read (or is not there)."""

    def delete(self, key: str) -> None: ...

    def url(self, key: str) -> str: ...

    def ping(self) -> None:
        """Raise StorageError when the backend cannot be reached."""


def write_atomically(target: Path, data: bytes) -> None:
    """Write then rename, so a reader never sees a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, target)


class LocalStorage:
    """Files under a directory; the API serves them at /files/{key}."""

    def __init__(self, root: Path, public_base_url: str):
        self.root = root.resolve()
        self.public_base_url = public_base_url.rstrip("/")

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            write_atomically(self.path(key), data)
        except OSError as exc:
            # A full or unmounted disk is a storage failure like S3's: retried, not a crash.
            raise StorageError(f"writing {key} under {self.root} failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"reading {key} under {self.root} failed: {exc}") from exc

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return f"{self.public_base_url}/files/{key}"

    def ping(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"image directory {self.root} is not writable")

    def prune(self, max_age_s: float) -> int:
        """Delete job images older than `max_age_s` (the S3 backend uses a lifecycle
        rule); nothing outside jobs/ (adapters stay until deleted)."""
        cutoff = time.time() - max_age_s
        removed = 0
        for file in (self.root / JOBS_PREFIX).rglob("*"):
            if file.is_file() and file.stat().st_mtime < cutoff:
                file.unlink(missing_ok=True)
                removed += 1
        return removed

    def path(self, key: str) -> Path:
        """The file for `key`; refuses keys that would leave the storage root."""
        target = (self.root / key).resolve()
        if not target.is_relative_to(self.root) or target == self.root:
            raise StorageError(f"invalid storage key {key!r}")
        return target


class S3Storage:
    """An S3-compatible bucket (AWS, SeaweedFS, Garage, MinIO, moto) through boto3."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint_url: str | None,
        presign_expiry_s: int,
        public_endpoint_url: str | None = None,
        retries: int = 5,
    ):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.presign_expiry_s = presign_expiry_s
        config = Config(retries={"max_attempts": retries, "mode": "standard"}, connect_timeout=5)
        self.client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        # Presigning is local computation, but the signature covers the host:
        # sign with the endpoint clients will use (docker compose: localhost).
        self.signer = (
            boto3.client("s3", endpoint_url=public_endpoint_url, config=config)
            if public_endpoint_url
            else self.client
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"upload of {key} to s3://{self.bucket} failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        return self.read(self.bucket, self._key(key))

    def read(self, bucket: str, key: str) -> bytes:
        """Any object this storage's client may read (its endpoint, its credentials)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client.get_object(Bucket=bucket, Key=key)
            return bytes(answer["Body"].read())
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"download of s3://{bucket}/{key} failed: {exc}") from exc

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"deleting {key} from s3://{self.bucket} failed: {exc}") from exc

    def url(self, key: str) -> str:
        return str(
            self.signer.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=self.presign_expiry_s,
            )
        )

    def ping(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"bucket s3://{self.bucket} is not reachable: {exc}") from exc


def read_s3_url(storage: Storage, url: str) -> bytes:
    """The object at s3://bucket/key, read with the job storage's S3 client; StorageError
    when the storage is not on S3 or the read fails."""
    if not isinstance(storage, S3Storage):
        raise StorageError(f"{url}: s3:// URLs need the job storage on S3 (STORAGE_URL=s3://...)")
    parts = urlparse(url)
    return storage.read(parts.netloc, parts.path.lstrip("/"))


def storage_from_settings(settings: Settings, s3_retries: int = 5) -> Storage:
    """The storage STORAGE_URL names. `s3_retries`: boto3's own retries of a request
    (a worker, which retries uploads itself for STORAGE_RETRY_S, asks for fewer)."""
    parsed = urlparse(settings.storage_url)
    if parsed.scheme == "s3":
        return S3Storage(
            bucket=parsed.netloc,
            prefix=parsed.path,
            endpoint_url=settings.s3_endpoint_url,
            presign_expiry_s=settings.presign_expiry_s,
            public_endpoint_url=settings.s3_public_endpoint_url,
            retries=s3_retries,
        )
    # file:///abs/path, or file://./relative for a path relative to the cwd.
    root = Path(parsed.netloc + parsed.path) if parsed.netloc == "." else Path(parsed.path)
    return LocalStorage(root, settings.public_base_url)
