"""One log format for every darkroom process: text for people, or JSON lines for machines.

LOG_FORMAT=json writes one JSON object a line: time, level, logger, message and,
where known, the job id, the model and the worker. Those three come from a
context (`log_context`) that the worker and the API set around their work, so
a log line deep in the pipeline code carries them without being passed them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType

# The fields a line may carry beyond the message, in the order they are written.
CONTEXT_FIELDS = ("job_id", "model", "worker")

# Read-only mappings: a context is replaced, never changed in place.
_context: ContextVar[Mapping[str, str]] = ContextVar(
    "darkroom_log_context", default=MappingProxyType({})
)
# Process-wide fields (a worker's name and model), under any per-task context.
_process_context: dict[str, str] = {}


def set_process_context(**fields: str | None) -> None:
    """Fields every later line of this process carries (a worker's name and model);
    None removes one."""
    for name, value in fields.items():
        if value is None:
            _process_context.pop(name, None)
        else:
            _process_context[name] = value


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Lines logged inside carry `fields` (job_id=..., model=...) as well."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v}}
    token = _context.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = {**_process_context, **_context.get()}
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None) or context.get(name)
            if value:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


# Loggers that servers configure with handlers of their own: in JSON mode their
# lines go through the root handler instead, so that every line is JSON.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery")


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    root = logging.getLogger()
    if root.handlers and not any(getattr(h, "darkroom", False) for h in root.handlers):
        # Someone else (a test runner, an embedding program) owns the root logger.
        root.setLevel(level.upper())
    else:
        handler = logging.StreamHandler()
        handler.darkroom = True  # type: ignore[attr-defined]  # ours: a later call replaces it
        handler.setFormatter(
            JsonFormatter()
            if fmt == "json"
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if fmt == "json":
        # warnings.warn (Celery's warning about running as root, deprecations)
        # becomes a log record too, not a text block on stderr.
        logging.captureWarnings(True)
        for name in _SERVER_LOGGERS:
            server_logger = logging.getLogger(name)
            server_logger.handlers.clear()
            server_logger.propagate = True
    # Libraries that narrate every request at INFO.
    for noisy in ("httpx", "botocore", "urllib3", "diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
