"""`darkroom up`'s own secrets: the webhook secret it makes is kept in a private file,
never in its log, and allowing webhooks into private networks is a warning.

The stack runs as a person starts it (its own Redis, the API, the webhook
worker; no GPU worker, no demo, no page), in a scratch directory.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from darkroom.stack import free_port
from tests.support.processes import REPO_ROOT

SECRET_FILE = Path("data") / "webhook_secret"
# No GPU worker, no demo, no page: the stack's own secrets are all this looks at.
UP_ARGS = ["--workers", "0", "--no-demo", "--no-ui", "--once"]
STACK_TIMEOUT_S = 240


def darkroom_up(workdir: Path, registry_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DARKROOM_", "WEBHOOK_", "REDIS_", "API_KEYS"))
    }
    return subprocess.run(
        [sys.executable, "-m", "darkroom.cli", "up", "--port", str(free_port()), *UP_ARGS],
        env={**inherited, "PYTHONPATH": str(REPO_ROOT), "MODEL_CONFIG": str(registry_file), **env},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=STACK_TIMEOUT_S,
    )


def test_the_generated_webhook_secret_is_in_a_private_file_not_the_log(
    tmp_path: Path, registry_file: Path
) -> None:
    run = darkroom_up(tmp_path, registry_file)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output

    secret_file = tmp_path / SECRET_FILE
    secret = secret_file.read_text().strip()
    assert secret.startswith("whsec_")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret not in output
    assert secret.removeprefix("whsec_") not in output
    assert str(secret_file) in output

    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert any("WEBHOOK_ALLOW_PRIVATE_NETWORKS is on" in line for line in warnings), output


def test_a_secret_of_your_own_is_neither_logged_nor_written(
    tmp_path: Path, registry_file: Path
) -> None:
    own = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    run = darkroom_up(
        tmp_path, registry_file, WEBHOOK_SECRET=own, WEBHOOK_ALLOW_PRIVATE_NETWORKS="false"
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert own not in output
    assert not (tmp_path / SECRET_FILE).exists()
    assert "WEBHOOK_ALLOW_PRIVATE_NETWORKS is on" not in output


def test_each_process_writes_its_own_log_and_the_terminal_shows_darkrooms_lines(
    tmp_path: Path, registry_file: Path
) -> None:
    run = darkroom_up(tmp_path, registry_file)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    logs = tmp_path / ".darkroom" / "logs"
    assert {p.name for p in logs.iterdir()} == {"redis.log", "api.log", "webhooks.log"}
    assert ".darkroom/logs/<name>.log" in output  # says where
    # The children's chatter is in their files, not on the terminal.
    assert "Redis is starting" in (logs / "redis.log").read_text()
    assert "Redis is starting" not in output
    assert "Uvicorn running" not in output
    assert all(line.split(" ", 1)[1].startswith("darkroom: ") for line in output.splitlines())
    secret = (tmp_path / SECRET_FILE).read_text().strip()
    assert all(secret not in p.read_text(errors="replace") for p in logs.iterdir())
