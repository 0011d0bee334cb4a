"""The client commands (`darkroom submit/jobs/get/cancel/status`) against a real stack:
the API over HTTP, real workers, S3 over moto. Each runs as a person types it."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from darkroom.client import DarkroomClient
from darkroom.progress import watch
from darkroom.stack import free_port
from tests.support.polling import wait_until
from tests.support.processes import REPO_ROOT, ApiProcess, start_api

FLAKY = "tiny-flaky"
API_KEY = "cli-test-key-0123456789abcdef"


def _env(**extra: str) -> dict[str, str]:
    # A wide terminal, so tables are not cut; no inherited key or URL.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DARKROOM_")}
    return {**env, "COLUMNS": "240", "PYTHONPATH": str(REPO_ROOT), **extra}


def darkroom(api_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "darkroom.cli", *args, "--api-url", api_url],
        env=_env(**env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def client(api_server: ApiProcess) -> Iterator[DarkroomClient]:
    with DarkroomClient(api_server.url) as api_client:
        yield api_client


def _slow(tag: str) -> str:
    return f"slow {tag} {uuid.uuid4().hex[:8]}"


def test_submit_wait_saves_the_image_and_prints_one_summary_line(
    api_server: ApiProcess, tmp_path: Path
) -> None:
    out = tmp_path / "fox.png"
    result = darkroom(
        api_server.url,
        "submit",
        "a red fox",
        "--model",
        "tiny-sd",
        "--seed",
        "7",
        "--wait",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.strip().splitlines()
    assert line.startswith("succeeded")
    for part in ("tiny-sd", "seed 7", "64x64", "2 steps", f"saved {out}"):
        assert part in line
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (64, 64)


def test_submit_several_images_to_a_directory(api_server: ApiProcess, tmp_path: Path) -> None:
    out = tmp_path / "foxes"
    result = darkroom(api_server.url, "submit", "two foxes", "-n", "2", "-o", str(out))
    assert result.returncode == 0, result.stderr
    saved = sorted(out.iterdir())
    assert len(saved) == 2
    assert all(path.suffix == ".png" for path in saved)
    job_id = saved[0].name.rsplit("-", 1)[0]
    assert all(path.name.startswith(job_id) for path in saved)
    assert all(str(path) in result.stdout for path in saved)


def test_submit_wait_saves_the_live_previews_as_they_come(
    api_server: ApiProcess, tmp_path: Path
) -> None:
    previews = tmp_path / "previews"
    result = darkroom(
        api_server.url,
        "submit",
        _slow("previews"),
        "--model",
        FLAKY,
        "--steps",
        "10",
        "--wait",
        "--previews",
        str(previews),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    saved = sorted(previews.iterdir())
    assert saved, result.stderr
    steps = []
    for path in saved:
        assert path.name.startswith(f"{job['id']}-step")
        assert path.suffix == ".webp"
        steps.append(int(path.stem.removeprefix(f"{job['id']}-step")))
        with Image.open(path) as image:
            assert (image.format, image.size) == ("WEBP", (64, 64))
    assert steps == sorted(set(steps))
    assert all(1 <= step <= 10 for step in steps)


def test_submit_json_prints_the_job_object(api_server: ApiProcess, client: DarkroomClient) -> None:
    result = darkroom(api_server.url, "submit", "서울의 밤거리, 네온사인", "--json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["params"]["prompt"] == "서울의 밤거리, 네온사인"
    assert client.wait(job["id"], timeout_s=60)["status"] == "succeeded"


def test_wait_shows_queue_position_then_step_progress(client: DarkroomClient) -> None:
    busy = client.submit({"prompt": _slow("busy"), "model": FLAKY, "steps": 8})
    job = client.submit({"prompt": _slow("watched"), "model": FLAKY, "steps": 6})
    assert job["status"] == "queued"
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=120)
    finished = watch(client, job, console, timeout_s=120)
    assert finished["status"] == "succeeded"
    drawn = screen.getvalue()
    assert "queued (" in drawn  # its place in line while the busy job ran
    assert "6/6 steps" in drawn
    assert any(f"{k}/6 steps" in drawn for k in range(1, 6))  # steps drawn as they ran
    client.wait(busy["id"], timeout_s=60)


def test_ctrl_c_stops_waiting_and_the_job_keeps_running(
    api_server: ApiProcess, client: DarkroomClient
) -> None:
    prompt = _slow("interrupted")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "darkroom.cli", "submit", prompt, "--model", FLAKY),
            *("--steps", "12", "--wait", "--api-url", api_server.url),
        ],
        env=_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running: list[dict[str, object]] = []

    def started() -> bool:
        running[:] = [
            j for j in client.list_jobs(status="running") if j["params"]["prompt"] == prompt
        ]
        return bool(running)

    wait_until(started)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    job_id = str(running[0]["id"])
    assert proc.returncode == 130
    assert f"job {job_id} keeps running" in stderr
    assert "Traceback" not in stderr
    assert client.wait(job_id, timeout_s=60)["status"] == "succeeded"


def test_failed_job_exits_non_zero_with_its_error(api_server: ApiProcess) -> None:
    result = darkroom(api_server.url, "submit", "raise please", "--model", FLAKY, "--wait")
    assert result.returncode == 1
    assert result.stdout.startswith("failed")
    assert "the flaky pipeline raised on purpose" in result.stdout


def test_jobs_lists_recent_jobs_as_a_table(api_server: ApiProcess, client: DarkroomClient) -> None:
    job = client.wait(client.submit({"prompt": "a listed lighthouse"})["id"], timeout_s=60)
    result = darkroom(api_server.url, "jobs", "--limit", "5")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["id", "status", "model", "created", "size", "images", "prompt"]
    [row] = [row for row in rows if job["id"] in row]
    assert "succeeded" in row
    assert "a listed lighthouse" in row
    listed = json.loads(darkroom(api_server.url, "jobs", "--json").stdout)
    assert job["id"] in [j["id"] for j in listed]


def test_get_shows_a_job_and_saves_its_images(
    api_server: ApiProcess, client: DarkroomClient, tmp_path: Path
) -> None:
    job = client.wait(client.submit({"prompt": "a saved owl", "seed": 11})["id"], timeout_s=60)
    result = darkroom(api_server.url, "get", job["id"], "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "a saved owl" in result.stdout
    assert "seed 11" in result.stdout
    saved = tmp_path / f"{job['id']}-1.png"
    assert Image.open(saved).size == (64, 64)


def test_cancel_a_running_job_then_a_finished_one_is_refused(
    api_server: ApiProcess, client: DarkroomClient
) -> None:
    job = client.submit({"prompt": _slow("canceled"), "model": FLAKY, "steps": 30})
    wait_until(lambda: client.get(job["id"])["status"] == "running")
    result = darkroom(api_server.url, "cancel", job["id"])
    assert result.returncode == 0, result.stderr
    assert f"cancel requested: {job['id']}" in result.stdout
    assert client.wait(job["id"], timeout_s=60)["status"] == "canceled"

    again = darkroom(api_server.url, "cancel", job["id"])
    assert again.returncode == 1
    assert again.stderr.startswith("darkroom: HTTP 409")


def test_status_shows_workers_models_and_queues(api_server: ApiProcess) -> None:
    result = darkroom(api_server.url, "status")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("darkroom is ok")
    for expected in ("e2e-tiny@test", "e2e-flaky@test", "tiny-sd", FLAKY, "queues"):
        assert expected in out


def test_unreachable_api_is_one_clear_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["status"], ["jobs"], ["submit", "a fox", "--wait"], ["get", "x"]):
        result = darkroom(url, *command)
        assert result.returncode == 1
        assert result.stderr == f"darkroom: cannot reach the darkroom API at {url} " + (
            "(connection refused or no such host)\n"
        )


def test_refused_submit_names_the_problem(api_server: ApiProcess) -> None:
    result = darkroom(api_server.url, "submit", "a fox", "--steps", "999")
    assert result.returncode == 1
    assert result.stderr.startswith("darkroom: HTTP ")
    assert "steps" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def keyed_api(
    e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """A second API process on the same Redis and workers, with API keys on."""
    log = tmp_path_factory.mktemp("keyed-api") / "api.log"
    server = start_api({**e2e_env, "API_KEYS": API_KEY}, log, free_port())
    yield server
    server.stop()


def test_api_key_from_the_environment_or_the_flag(keyed_api: ApiProcess) -> None:
    refused = darkroom(keyed_api.url, "jobs")
    assert refused.returncode == 1
    assert refused.stderr.startswith("darkroom: HTTP 401")
    assert "--api-key" in refused.stderr

    assert darkroom(keyed_api.url, "jobs", DARKROOM_API_KEY=API_KEY).returncode == 0
    assert darkroom(keyed_api.url, "jobs", "--api-key", API_KEY).returncode == 0


def test_a_priority_the_key_may_not_use_is_refused_before_submitting(
    keyed_api: ApiProcess,
) -> None:
    # Keys from API_KEYS may use normal and low (GET /me), not high.
    with DarkroomClient(keyed_api.url, api_key=API_KEY) as owner:
        assert owner.me()["priorities"] == ["normal", "low"]
        before = [job["id"] for job in owner.list_jobs(limit=100)]
        refused = darkroom(
            keyed_api.url, "submit", "a fox", "--priority", "high", "--api-key", API_KEY
        )
        assert refused.returncode == 1
        assert refused.stderr == (
            "darkroom: priority 'high' is not allowed for this API key (allowed: normal, low)\n"
        )
        assert [job["id"] for job in owner.list_jobs(limit=100)] == before  # nothing queued

    allowed = darkroom(
        keyed_api.url, "submit", "a fox", "--priority", "low", "--json", DARKROOM_API_KEY=API_KEY
    )
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["priority"] == "low"
