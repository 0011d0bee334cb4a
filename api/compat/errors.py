"""The errors only the compatible APIs raise (api.errors maps them to HTTP, per dialect)."""

from __future__ import annotations

from shared.errors import DarkroomError, InvalidRequest

# Each of these answers a call that already made jobs: a client retrying on its
# own would queue (and be charged for) every job again. The OpenAI SDKs obey it.
NO_RETRY = {"x-should-retry": "false"}


class UnknownModel(InvalidRequest):
    """A model name (or A1111 title) that is not in the registry: OpenAI answers 404."""

    type = "model_not_found"

    def __init__(self, name: str, known: list[str]):
        super().__init__(f"model {name!r} does not exist; available: {', '.join(known)}", "model")
        self.name = name


class WaitTimedOut(DarkroomError):
    """The jobs of a call did not finish within COMPAT_WAIT_S; they keep running."""

    type = "timeout"

    def __init__(self, job_ids: list[str], waited_s: float):
        named = ", ".join(job_ids)
        if len(job_ids) == 1:
            what, rest = f"job {named}", "it keeps running"
        else:
            what, rest = f"jobs {named}", "they keep running"
        super().__init__(
            f"{what} did not finish within {waited_s:g} s (COMPAT_WAIT_S); {rest}: "
            f"poll GET /jobs/{job_ids[0]} for the images"
        )
        self.job_ids = job_ids
        self.headers = dict(NO_RETRY)
        self.detail = {"job_ids": job_ids}


class JobDidNotSucceed(DarkroomError):
    """A job of the call ended without images (failed, or canceled)."""

    type = "job_failed"

    def __init__(self, job_id: str, status: str, reason: str):
        verb = "was canceled" if status == "canceled" else status
        super().__init__(f"job {job_id} {verb}: {reason}")
        self.job_id = job_id
        self.headers = dict(NO_RETRY)
        self.detail = {"job_ids": [job_id], "status": status}


class JobFailed(JobDidNotSucceed):
    """Its generation failed (the job's error says why)."""


class JobCanceled(JobDidNotSucceed):
    """Someone canceled it (POST /jobs/{id}/cancel, its deadline, A1111's interrupt)."""

    type = "job_canceled"


class FeatureUnavailable(InvalidRequest):
    """An A1111 feature darkroom does not have (an upscaler model, face restoration),
    asked for by name: refused rather than silently skipped."""

    type = "not_available"


class EndpointUnavailable(DarkroomError):
    """An A1111 endpoint darkroom does not serve (CLIP interrogation): 501, saying so,
    rather than a bare 404 a client takes for a wrong URL."""

    type = "not_implemented"
