"""CompatJobCreate: a compatible API's job may have an empty prompt; darkroom's own may not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.jobs import CompatJobCreate, JobCreate


def test_a_compat_job_may_have_no_prompt() -> None:
    assert CompatJobCreate().prompt == ""
    assert CompatJobCreate(prompt="").prompt == ""
    assert CompatJobCreate(prompt="a cat").prompt == "a cat"


@pytest.mark.parametrize("prompt", ["   ", " \t\n\u3000"])
def test_a_prompt_of_spaces_alone_is_still_refused(prompt: str) -> None:
    with pytest.raises(ValidationError, match="only whitespace"):
        CompatJobCreate(prompt=prompt)


def test_darkroom_jobs_still_need_a_prompt() -> None:
    with pytest.raises(ValidationError):
        JobCreate(prompt="")
