"""Images of the local storage backend (STORAGE_URL=file://...)."""

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.auth import OwnerDep
from api.deps import StateDep
from shared.errors import FileNotFound, InvalidRequest, JobNotFound, StorageError
from shared.storage import LocalStorage

router = APIRouter(tags=["files"])

# Workers store a job's images as jobs/<job id>/<index>.png (worker/outcomes.py).
JOBS_DIR = "jobs"


@router.get("/files/{key:path}")
def get_file(key: str, state: StateDep, owner: OwnerDep) -> FileResponse:
    """Serve an image of one of the caller's jobs. Nothing else: not another key's
    images, not files outside the storage root (404, as for a missing file)."""
    storage = state.storage
    if not isinstance(storage, LocalStorage):
        raise FileNotFound("images are served by the object store, not by the API")
    if "\x00" in key:
        # No file name holds one; the filesystem would refuse it with a ValueError.
        raise InvalidRequest("the file name contains a NUL byte (%00)", "key")
    try:
        path = storage.path(key)
    except StorageError:
        raise FileNotFound(f"no file {key!r}") from None
    # Ownership is checked on the resolved path, so "jobs/mine/../theirs/0.png"
    # is judged as the file it names.
    stored = path.relative_to(storage.root).as_posix()
    if not _is_image_of_callers_job(state, stored, owner) or not path.is_file():
        raise FileNotFound(f"no file {key!r}")
    return FileResponse(path, media_type="image/png")


def _is_image_of_callers_job(state: StateDep, key: str, owner: str) -> bool:
    """`key` is an image listed on a live job record that belongs to `owner`."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != JOBS_DIR:
        return False
    try:
        record = state.store.get(parts[1])
    except JobNotFound:
        return False
    return record.owner == owner and key in {image.key for image in record.images}
