"""darkroom's exceptions: one base class, one subclass per meaning, all here.

They say what went wrong, never how to answer it: the API maps each class to
an HTTP status in one place (api/errors.py); workers record them on the job as
`{type, message}`.
"""

from __future__ import annotations


class DarkroomError(Exception):
    """Base class of every error darkroom raises on purpose."""

    #: Stable, machine-readable name shown to clients as `error.type`.
    type = "darkroom_error"
    #: Extra response headers (WWW-Authenticate, Retry-After) and a structured detail.
    headers: dict[str, str] | None = None
    detail: object = None
    #: HTTP status the API answers with.


class ConfigError(DarkroomError):
    """The settings or the model registry are invalid."""

    type = "config_error"


class InvalidRequest(DarkroomError):
    """A request is well-formed JSON but asks for something darkroom refuses."""

    type = "invalid_request"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ModelNotServed(InvalidRequest):
    """A registry model no live worker may load (and not `autoscaled`): its jobs
    would wait for ever."""

    type = "model_not_served"

    def __init__(self, name: str, servable: list[str]):
        super().__init__(
            f"model {name!r} is not served by any live worker now (none may load it); "
            f"servable: {', '.join(servable) or 'none'}",
            "model",
        )
        self.name = name


class JobNotFound(DarkroomError):
    type = "not_found"

    def __init__(self, job_id: str):
        super().__init__(f"job {job_id!r} not found (unknown, expired or not yours)")
        self.job_id = job_id


class InvalidTransition(DarkroomError):
    """A job was asked to move to a status it cannot reach from where it is."""

    type = "conflict"


class ServiceUnavailable(DarkroomError):
    """A backing service (Redis, the broker, storage) cannot be reached."""

    type = "service_unavailable"


class NotReplicated(ServiceUnavailable):
    """Fewer replicas than REDIS_MIN_REPLICAS_ACK confirmed a write in time.

    The write is on the master, but a failover now could lose it.
    """

    type = "not_replicated"


class StorageError(DarkroomError):
    type = "storage_error"


class ModelLoadError(DarkroomError):
    """A model could not be loaded; the message says why."""

    type = "model_load_error"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        # Why, without the model's name (a worker lists it beside the name).
        self.reason = reason or message


class GenerationError(DarkroomError):
    """The pipeline failed while generating."""

    type = "generation_error"


class Unauthorized(DarkroomError):
    """No API key, or one that is not accepted."""

    type = "unauthorized"

    def __init__(self, message: str, error: str | None = None):
        super().__init__(message)
        # RFC 6750: tell the client which scheme to use, and why a token was refused.
        challenge = 'Bearer realm="darkroom"'
        if error:
            challenge += f', error="{error}"'
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(DarkroomError):
    """The caller's API key is not allowed what it asked for (a priority, a setting)."""

    type = "forbidden"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class RateLimited(DarkroomError):
    """The caller's API key is over one of its limits."""

    type = "rate_limited"

    def __init__(self, message: str, limit: str, maximum: int, retry_after_s: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}
        self.detail = {"limit": limit, "max": maximum, "retry_after_s": retry_after_s}


class FileNotFound(DarkroomError):
    """A stored file that does not exist, or is not the caller's to read."""

    type = "not_found"


class PreviewNotReady(DarkroomError):
    """A job with no live preview (yet): none made so far, or no such image."""

    type = "preview_not_ready"


class IdempotencyConflict(DarkroomError):
    """An Idempotency-Key reused with a different request body."""

    type = "idempotency_conflict"


class LoraNotFound(DarkroomError):
    """A LoRA adapter the caller has no access to by that name (another key's, or none)."""

    type = "not_found"


class LoraConflict(DarkroomError):
    """An adapter name already taken (by the registry's adapters)."""

    type = "conflict"


class QuotaExceeded(DarkroomError):
    """Over a size or count cap of what a key may keep (LORA_MAX_BYTES, LORA_MAX_PER_KEY)."""

    type = "quota_exceeded"
