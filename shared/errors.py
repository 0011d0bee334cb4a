"""darkroom's exceptions: one base class, one subclass per meaning.

The API maps them to HTTP in one place (api/errors.py); workers record them on
the job as `{type, message}`.
"""


class DarkroomError(Exception):
    """Base class of every error darkroom raises on purpose."""

    #: Stable, machine-readable name shown to clients as `error.type`.
    type = "darkroom_error"
    #: HTTP status the API answers with.
    status_code = 500


class ConfigError(DarkroomError):
    """The settings or the model registry are invalid."""

    type = "config_error"


class InvalidRequest(DarkroomError):
    """A request is well-formed JSON but asks for something darkroom refuses."""

    type = "invalid_request"
    status_code = 422

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class JobNotFound(DarkroomError):
    type = "not_found"
    status_code = 404

    def __init__(self, job_id: str):
        super().__init__(f"job {job_id!r} not found (unknown, expired or not yours)")
        self.job_id = job_id


class InvalidTransition(DarkroomError):
    """A job was asked to move to a status it cannot reach from where it is."""

    type = "conflict"
    status_code = 409


class ServiceUnavailable(DarkroomError):
    """A backing service (Redis, the broker, storage) cannot be reached."""

    type = "service_unavailable"
    status_code = 503


class StorageError(DarkroomError):
    type = "storage_error"
    status_code = 503


class ModelLoadError(DarkroomError):
    """A model could not be loaded; the message says why."""

    type = "model_load_error"


class GenerationError(DarkroomError):
    """The pipeline failed while generating."""

    type = "generation_error"
