"""Jobs: submit and poll."""

from fastapi import APIRouter, Response, status

from api.deps import JobDep, StateDep
from api.submission import public_job, submit_job
from shared.jobs import Job, JobCreate

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=Job)
def create_job(body: JobCreate, state: StateDep, response: Response) -> Job:
    """Queue a generation job. Answers 202 with the job and its `Location`; poll that URL."""
    record = submit_job(state, body)
    response.headers["Location"] = f"/jobs/{record.id}"
    return public_job(state, record)


@router.get("/{job_id}", response_model=Job)
def get_job(job: JobDep, state: StateDep) -> Job:
    """The job as it stands: status, progress, images (with fresh URLs) or error."""
    return public_job(state, job)
