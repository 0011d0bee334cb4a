"""Image storage: a local directory (keys cannot escape it) and S3 over real HTTP (moto)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from shared.errors import StorageError
from shared.settings import Settings
from shared.storage import LocalStorage, S3Storage, storage_from_settings
from tests.conftest import S3_BUCKET

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"


# --- local --------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "images", "http://api.example/")


def test_local_put_writes_the_file(local: LocalStorage) -> None:
    local.put("job1/0.png", PNG, "image/png")
    path = local.path("job1/0.png")
    assert path == local.root / "job1" / "0.png"
    assert path.read_bytes() == PNG
    # No temporary file is left next to it.
    assert [p.name for p in path.parent.iterdir()] == ["0.png"]


def test_local_put_overwrites(local: LocalStorage) -> None:
    local.put("a.png", b"one", "image/png")
    local.put("a.png", b"two", "image/png")
    assert local.path("a.png").read_bytes() == b"two"


def test_local_url(local: LocalStorage) -> None:
    assert local.url("job1/0.png") == "http://api.example/files/job1/0.png"


def test_local_ping_creates_the_root(local: LocalStorage) -> None:
    assert not local.root.exists()
    local.ping()
    assert local.root.is_dir()


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../x", "..", "", ".", "a/.."])
def test_local_path_traversal_refused(local: LocalStorage, key: str) -> None:
    with pytest.raises(StorageError, match="invalid storage key"):
        local.path(key)


def test_local_put_outside_root_refused(local: LocalStorage, tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        local.put("../escaped.png", PNG, "image/png")
    assert not (tmp_path / "escaped.png").exists()


def test_local_symlink_out_of_root_refused(local: LocalStorage, tmp_path: Path) -> None:
    local.root.mkdir(parents=True)
    (tmp_path / "secret").write_text("s")
    (local.root / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(StorageError):
        local.path("link")


def test_local_inner_dots_allowed(local: LocalStorage) -> None:
    assert local.path("a/../b.png") == local.root / "b.png"


# --- S3 (moto over HTTP) -------------------------------------------------------------------


def s3(endpoint: str, bucket: str = S3_BUCKET, prefix: str = "") -> S3Storage:
    return S3Storage(bucket=bucket, prefix=prefix, endpoint_url=endpoint, presign_expiry_s=300)


def test_s3_put_and_presigned_url(s3_endpoint: str) -> None:
    storage = s3(s3_endpoint, prefix=f"/run-{uuid.uuid4().hex}/")
    key = "job/0.png"
    storage.put(key, PNG, "image/png")
    url = storage.url(key)
    assert url.startswith(s3_endpoint)
    assert storage.prefix in url
    assert "Signature" in url or "X-Amz-Signature" in url
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"


def test_s3_object_lands_under_the_prefix(s3_endpoint: str) -> None:
    prefix = f"p-{uuid.uuid4().hex}"
    storage = s3(s3_endpoint, prefix=prefix)
    storage.put("x.png", b"data", "image/png")
    listed = storage.client.list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix)
    assert [o["Key"] for o in listed["Contents"]] == [f"{prefix}/x.png"]


def test_s3_url_of_missing_object_is_not_downloadable(s3_endpoint: str) -> None:
    url = s3(s3_endpoint).url(f"missing-{uuid.uuid4().hex}.png")
    assert httpx.get(url).status_code == 404


def test_s3_ping_ok(s3_endpoint: str) -> None:
    s3(s3_endpoint).ping()


def test_s3_ping_missing_bucket(s3_endpoint: str) -> None:
    with pytest.raises(StorageError, match="no-such-bucket"):
        s3(s3_endpoint, bucket="no-such-bucket").ping()


def test_s3_put_to_missing_bucket(s3_endpoint: str) -> None:
    with pytest.raises(StorageError, match=r"upload of k\.png"):
        s3(s3_endpoint, bucket="no-such-bucket").put("k.png", b"x", "image/png")


# --- storage_from_settings -----------------------------------------------------------------


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_storage_from_file_url(tmp_path: Path) -> None:
    storage = storage_from_settings(
        settings(storage_url=f"file://{tmp_path}/imgs", public_base_url="http://h:1/")
    )
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "imgs").resolve()
    assert storage.url("k.png") == "http://h:1/files/k.png"


def test_storage_from_relative_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = storage_from_settings(settings(storage_url="file://./data/images"))
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "data" / "images").resolve()


def test_storage_from_s3_url(s3_endpoint: str) -> None:
    storage = storage_from_settings(
        settings(
            storage_url=f"s3://{S3_BUCKET}/some/prefix",
            s3_endpoint_url=s3_endpoint,
            presign_expiry_s=120,
        )
    )
    assert isinstance(storage, S3Storage)
    assert storage.bucket == S3_BUCKET
    assert storage.prefix == "some/prefix"
    assert storage.presign_expiry_s == 120
    storage.ping()


def test_local_put_that_the_disk_refuses_is_a_storage_error(local: LocalStorage) -> None:
    local.root.parent.mkdir(parents=True, exist_ok=True)
    local.root.write_bytes(b"a file where the image directory should be")
    with pytest.raises(StorageError, match=r"writing job1/0\.png under"):
        local.put("job1/0.png", PNG, "image/png")
