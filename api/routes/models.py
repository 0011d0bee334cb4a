"""The model registry as the workers see it."""

from collections import Counter

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import StateDep
from api.serving import Serving
from shared.registry import ModelEntry, Registry
from shared.samplers import sampler_names, schedule_labels
from shared.workers import ModelFailure, live_workers

router = APIRouter(tags=["models"])


class ModelInfo(BaseModel):
    id: str
    type: str
    requires_auth: bool
    default_steps: int
    max_steps: int
    max_tokens: int
    supports_i2i: bool
    supports_inpainting: bool
    default_sampler: str | None
    samplers: list[str]
    # The sigma schedules (`scheduler`) at least one of its samplers takes.
    schedulers: list[str]
    use_negative_prompt: bool
    guidance_scale: float
    default_size: tuple[int, int]
    max_size: tuple[int, int]
    negative_prompt: str
    # LoRA adapters a job may ask for at once (GET /loras lists them).
    max_loras: int
    description: str
    pipeline_class: str | None
    max_batch_size: int
    batch_window: float
    workers: int
    # A live worker may load it (or it is `autoscaled`, or no worker is live yet):
    # its jobs are accepted. Not servable: they are refused at submit.
    servable: bool
    # A live worker may load it (WORKER_MODELS) or runs it.
    loadable: bool
    # A live worker holds it on its device now: its jobs start without a load.
    resident: bool
    autoscaled: bool


class ModelsResponse(BaseModel):
    models: dict[str, ModelInfo]
    current: str | None
    primary: str
    fallback_chain: list[str]
    enable_fallback: bool
    served: dict[str, int]
    load_failures: dict[str, list[ModelFailure]]


def _info(
    name: str, entry: ModelEntry, workers: int, serving: Serving, registry: Registry
) -> ModelInfo:
    return ModelInfo(
        servable=serving.servable(name, registry),
        loadable=name in serving.loadable,
        resident=name in serving.resident,
        autoscaled=entry.autoscaled,
        id=entry.id,
        type=entry.type,
        requires_auth=entry.requires_auth,
        description=entry.description,
        pipeline_class=entry.pipeline_class,
        max_batch_size=entry.max_batch_size,
        batch_window=entry.batch_window,
        workers=workers,
        samplers=sampler_names(entry.type),
        schedulers=schedule_labels(entry.type),
        **entry.params.model_dump(
            include={
                "default_steps",
                "max_steps",
                "max_tokens",
                "supports_i2i",
                "supports_inpainting",
                "default_sampler",
                "use_negative_prompt",
                "guidance_scale",
                "default_size",
                "max_size",
                "negative_prompt",
                "max_loras",
            }
        ),
    )


@router.get("/models", response_model=ModelsResponse)
def list_models(state: StateDep) -> ModelsResponse:
    """Every registry model with its limits, and what the live workers actually serve.

    `current` is the model served by the most live workers (the primary when it
    is served at all); `served` counts workers per model.
    """
    registry = state.registry
    workers = live_workers(state.redis)
    served = Counter(w.model for w in workers if w.model)
    primary = registry.runtime.primary_model
    current = primary if primary in served else (served.most_common(1)[0][0] if served else None)
    serving = Serving.of_workers(workers)
    return ModelsResponse(
        models={
            name: _info(name, entry, served[name], serving, registry)
            for name, entry in registry.models.items()
        },
        current=current,
        primary=primary,
        fallback_chain=registry.fallback_chain,
        enable_fallback=registry.runtime.enable_fallback,
        served=dict(served),
        load_failures={w.name: w.failures for w in workers if w.failures},
    )
