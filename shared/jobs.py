"""Job schemas and the job status machine, shared by the API and the workers."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.hires import HiresFix, HiresParams
from shared.loras import LoraChoice, ResolvedLora

MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 4000
WebhookEvent = Literal["start", "progress", "completed"]
Priority = Literal["high", "normal", "low"]
MAX_DEADLINE_S = 7 * 24 * 3600


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def can_move_to(self, target: JobStatus) -> bool:
        return target in _TRANSITIONS[self]


_TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}
_TRANSITIONS: dict[JobStatus, set[JobStatus]] = {
    JobStatus.QUEUED: {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELED},
    # running -> queued: the job is handed back to the queue (its worker died).
    JobStatus.RUNNING: {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELED,
        JobStatus.QUEUED,
    },
    JobStatus.SUCCEEDED: set(),
    JobStatus.FAILED: set(),
    JobStatus.CANCELED: set(),
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobCreate(BaseModel):
    """Body of POST /jobs. Unset generation fields take the model's defaults."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    model: str | None = Field(
        None, max_length=200, description="Registry name; default: the primary model."
    )
    width: int | None = Field(None, ge=8, le=8192)
    height: int | None = Field(None, ge=8, le=8192)
    steps: int | None = Field(None, ge=1, le=1000)
    guidance_scale: float | None = Field(None, ge=0, le=50)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    source_seed: int | None = Field(
        None,
        ge=0,
        le=2**64 - 1,
        description="A compatible API's own seed (ComfyUI's are 64-bit) that `seed` was "
        "derived from: kept in the job's params.",
    )
    num_images: int = Field(1, ge=1, le=4)
    init_image: str | None = Field(
        None, description="Base64 PNG/JPEG/WebP, or a data: URL (image-to-image)."
    )
    strength: float | None = Field(None, gt=0, le=1)
    mask_image: str | None = Field(
        None,
        description=(
            "Inpainting, with init_image: base64 PNG (or data: URL) of the same size, "
            "white where the image is repainted, black where it is kept."
        ),
    )
    sampler: str | None = Field(
        None,
        max_length=64,
        description=(
            "Scheduler by its AUTOMATIC1111 name (GET /models lists each model's "
            "samplers); default: the model's default_sampler, else its own scheduler."
        ),
    )
    scheduler: str | None = Field(
        None,
        max_length=64,
        description=(
            "Sigma schedule by its AUTOMATIC1111 name (Karras, Exponential, SGM Uniform, "
            "Simple, Beta, ...; GET /models lists each model's schedulers); default "
            "(or 'Automatic'): the sampler's own."
        ),
    )
    hires: HiresFix | None = Field(
        None,
        description=(
            "Hires fix (text-to-image): a first pass at width x height, an upscale by "
            "scale (or to hires width/height), then an image-to-image pass at strength."
        ),
    )
    tiling: bool = Field(
        False, description="Seamless tiling: the image wraps around at its edges (a texture)."
    )
    loras: list[LoraChoice] | None = Field(
        None,
        max_length=16,
        description="LoRA adapters by name (GET /loras), each with its scale; at most the "
        "model's max_loras.",
    )
    webhook: str | None = Field(None, max_length=2048)
    # One entry per event kind at most (there are three).
    webhook_events_filter: list[WebhookEvent] | None = Field(None, max_length=3)
    priority: Priority = "normal"
    deadline: float | None = Field(
        None, gt=0, le=MAX_DEADLINE_S, description="Cancel the job if not finished by then (s)."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        # min_length alone lets "   " through, and a model given only spaces
        # generates from an empty conditioning: never what the caller meant.
        if not value.strip():
            raise ValueError("the prompt is only whitespace; describe the image")
        return value

    @field_validator("negative_prompt", "model", "webhook")
    @classmethod
    def _not_only_whitespace(cls, value: str | None) -> str | None:
        # "" stays meaningful for negative_prompt (no negative prompt at all);
        # spaces alone are a mistake in any of these fields.
        if value and not value.strip():
            raise ValueError('only whitespace; leave the field out (or "") instead')
        return value


class CompatJobCreate(JobCreate):
    """A job of a compatible API (api.compat), whose prompt may be empty: OpenAI's
    variations have none, and A1111's clients send "" for none. Diffusers takes ""
    as the unconditional prompt: the image comes from the input (or the noise)."""

    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        # Overrides JobCreate's: "" asks for no prompt, but spaces alone are still
        # a mistake, as there.
        if value and not value.strip():
            raise ValueError('the prompt is only whitespace; describe the image or send ""')
        return value


class GenerationParams(BaseModel):
    """Every resolved generation parameter of a job, as the worker runs it."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    num_images: int
    # The seed a compatible API was sent (ComfyUI's 64-bit one), when `seed` is derived.
    source_seed: int | None = None
    strength: float | None = None
    mode: Literal["txt2img", "img2img", "inpaint"] = "txt2img"
    # The scheduler, by its AUTOMATIC1111 name; None: the pipeline's own.
    sampler: str | None = None
    # The sigma schedule, by its A1111 id ("karras", "sgm_uniform"); None: the sampler's own.
    scheduler: str | None = None
    # Hires fix: the final size and second pass (width x height is the first pass's).
    hires: HiresParams | None = None
    # Circular padding in the UNet and VAE convolutions: the image tiles seamlessly.
    tiling: bool = False
    # Set by the worker when prompt optimisation rewrote (or translated) the prompt.
    optimized_prompt: str | None = None
    # LoRA adapters, resolved at submit: names, scales and each file's sha256.
    loras: list[ResolvedLora] = []

    @property
    def effective_prompt(self) -> str:
        return self.optimized_prompt or self.prompt


class StoredImage(BaseModel):
    key: str
    width: int
    height: int
    seed: int
    content_type: str = "image/png"


class ImageOut(BaseModel):
    url: str
    width: int
    height: int
    seed: int
    content_type: str


class JobErrorInfo(BaseModel):
    type: str
    message: str


DEADLINE_ERROR = JobErrorInfo(type="deadline_exceeded", message="the job's deadline passed")


class JobRecord(BaseModel):
    """A job as stored in Redis (one hash field per attribute)."""

    id: str
    status: JobStatus = JobStatus.QUEUED
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    model: str
    model_used: str | None = None
    queue: str
    params: GenerationParams
    progress: float = 0.0
    images: list[StoredImage] = []
    error: JobErrorInfo | None = None
    attempts: int = 0
    worker: str | None = None
    # Jobs that shared the pipeline call which made this job's images (1: alone).
    batch_size: int | None = None
    # Seconds inside the pipeline call that made its images (a batched call: its
    # whole time, for each job in it); set when it succeeds.
    inference_s: float | None = None
    webhook: str | None = None
    webhook_events_filter: list[WebhookEvent] = ["completed"]
    priority: Priority = "normal"
    deadline_at: datetime | None = None
    cancel_requested: bool = False
    # Who submitted it: the id of its API key (api.auth), or "anonymous" with
    # authentication off. Only that caller sees the job; never shown to clients.
    owner: str = "anonymous"
    # The scheduler's (docs/scheduling.md): the estimated cost charged to the owner's
    # usage when the job is given to a worker, and its place in its key's line
    # (creation, ms; a job handed back keeps it, so it goes first again).
    cost: float = 1.0
    arrival_ms: float = 0.0
    # The ids of its LoRA adapters, comma separated: a worker holding them goes first
    # for it (docs/scheduling.md, "Adapters").
    adapters: str = ""
    # Its event counter (status changes, progress writes, previews) and each status
    # change with the count it was made at: an event stream's ids, and the status
    # changes a reconnecting stream missed (api.event_stream).
    events: int = 1
    history: list[tuple[int, JobStatus]] = [(1, JobStatus.QUEUED)]

    @model_validator(mode="after")
    def _arrival(self) -> JobRecord:
        if not self.arrival_ms:
            self.arrival_ms = self.created_at.timestamp() * 1000
        return self

    def past_deadline(self, now: datetime | None = None) -> bool:
        return self.deadline_at is not None and (now or utcnow()) >= self.deadline_at


class WebhookAttempt(BaseModel):
    event_id: str
    event: str
    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None
    outcome: Literal["delivered", "retrying", "failed", "gone"]


class WebhookInfo(BaseModel):
    """The webhook section of a job: where it goes and every delivery attempt so far."""

    url: str
    events_filter: list[WebhookEvent]
    state: Literal["pending", "delivered", "retrying", "failed", "gone"]
    attempts: list[WebhookAttempt]


class JobTimings(BaseModel):
    queued_s: float | None
    running_s: float | None
    # Inside the pipeline call (a batched call: its whole time); once succeeded.
    inference_s: float | None = None


class JobUrls(BaseModel):
    get: str
    cancel: str
    # Server-Sent Events of its status, progress and previews; its latest preview.
    events: str | None = None
    preview: str | None = None


class Job(BaseModel):
    """A job as clients see it (POST /jobs and GET /jobs/{id})."""

    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    model: str
    model_used: str | None
    params: GenerationParams
    progress: float
    images: list[ImageOut]
    error: JobErrorInfo | None
    urls: JobUrls
    queue: str
    attempts: int
    worker: str | None
    batch_size: int | None = Field(
        None, description="Jobs that shared the pipeline call making this job's images (1: alone)."
    )
    webhook: WebhookInfo | None
    webhook_events_filter: list[WebhookEvent]
    priority: Priority
    deadline_at: datetime | None
    cancel_requested: bool
    queue_position: int | None = Field(
        None,
        description=(
            "Jobs that will run before this one as things stand (0: next); null unless queued."
        ),
    )
    eta_s: float | None = Field(
        None,
        description=(
            "Estimated seconds until it starts, from the work ahead of it and the model's "
            "recent speed; null unless queued, or when no live worker can run it."
        ),
    )
    timings: JobTimings


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None
