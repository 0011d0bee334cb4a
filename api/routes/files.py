"""Images of the local storage backend (STORAGE_URL=file://...)."""

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.deps import StateDep
from shared.errors import DarkroomError, StorageError
from shared.storage import LocalStorage

router = APIRouter(tags=["files"])


class FileNotFound(DarkroomError):
    type = "not_found"
    status_code = 404


@router.get("/files/{key:path}")
def get_file(key: str, state: StateDep) -> FileResponse:
    """Serve a stored image. Only darkroom's own files: keys cannot leave the storage root."""
    storage = state.storage
    if not isinstance(storage, LocalStorage):
        raise FileNotFound("images are served by the object store, not by the API")
    try:
        path = storage.path(key)
    except StorageError:
        raise FileNotFound(f"no file {key!r}") from None
    if not path.is_file():
        raise FileNotFound(f"no file {key!r}")
    return FileResponse(path, media_type="image/png")
