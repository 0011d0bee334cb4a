"""Who the caller is: its key's name, what it may use, its limits and its usage now."""

from fastapi import APIRouter
from pydantic import BaseModel

from api import ratelimit
from api.auth import OwnerDep
from api.deps import StateDep
from shared.jobs import Priority
from shared.scheduler import usage_fields, usage_now

router = APIRouter(tags=["me"])


class MeLimits(BaseModel):
    # None: no limit (0 in the settings).
    submits_per_minute: int | None
    max_queued: int | None
    max_running: int | None


class MeUsage(BaseModel):
    # None where the matching limit is off: the server counts only what it limits.
    queued: int | None
    running: int | None
    submits_last_minute: int | None
    # The estimated GPU-seconds of the jobs the key was given, each halving every
    # FAIR_SHARE_HALF_LIFE_S (docs/scheduling.md): what decides whose turn it is.
    gpu_seconds: float
    # Its fraction of the whole cluster's usage measured the same way (0..1).
    share: float


class Me(BaseModel):
    # The caller's identity on its jobs ("anonymous" with API keys off).
    owner: str
    # The key's name in API_KEYS_FILE, if it has one.
    name: str | None
    admin: bool
    # Whether the API has keys on.
    auth: bool
    # The priorities its jobs may ask for, highest first.
    priorities: list[Priority]
    # Its share of the workers against other keys within a priority band.
    weight: float
    limits: MeLimits
    usage: MeUsage


@router.get("/me", response_model=Me)
async def me(state: StateDep, owner: OwnerDep) -> Me:
    """The caller's key: its name, the priorities it may use, its limits and usage."""
    policy = state.keys.policy(owner)
    limits = ratelimit.Limits.of(state.settings, policy)
    usage = await ratelimit.usage(state.mux, owner, limits)
    scores = await state.mux.execute("HMGET", *usage_fields(owner))
    per_weight, total = usage_now(scores, state.settings.fair_share_half_life_s)
    gpu_seconds = per_weight * policy.weight
    return Me(
        owner=owner,
        name=policy.name,
        admin=policy.admin,
        auth=state.keys.enabled,
        priorities=list(policy.priorities),
        weight=policy.weight,
        limits=MeLimits(
            submits_per_minute=limits.submits_per_minute or None,
            max_queued=limits.max_queued or None,
            max_running=policy.max_running or None,
        ),
        usage=MeUsage(
            queued=usage.queued,
            running=usage.running,
            submits_last_minute=usage.submits_last_minute,
            gpu_seconds=round(gpu_seconds, 3),
            share=round(min(1.0, gpu_seconds / total), 4) if total > 0 else 0.0,
        ),
    )
