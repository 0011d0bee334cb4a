"""LOG_FORMAT=json: one JSON object a line, carrying the job, model and worker where known."""

from __future__ import annotations

import io
import json
import logging

from shared.logs import JsonFormatter, log_context, set_process_context


def _line(stream: io.StringIO) -> dict[str, object]:
    value = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def _logger() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("darkroom.test.json")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_a_line_has_time_level_logger_message() -> None:
    logger, stream = _logger()
    logger.warning("큐에 %d개의 작업", 3)
    line = _line(stream)
    assert line["level"] == "WARNING"
    assert line["logger"] == "darkroom.test.json"
    assert line["message"] == "큐에 3개의 작업"
    assert str(line["time"]).endswith("+00:00")


def test_context_adds_job_model_and_worker_and_is_undone_after() -> None:
    logger, stream = _logger()
    set_process_context(worker="gpu0@host", model="sdxl")
    try:
        with log_context(job_id="abc123"):
            logger.info("running")
        inside = _line(stream)
        logger.info("idle")
        after = _line(stream)
    finally:
        set_process_context(worker=None, model=None)
    assert inside == {**inside, "job_id": "abc123", "model": "sdxl", "worker": "gpu0@host"}
    assert "job_id" not in after
    assert after["worker"] == "gpu0@host"


def test_exceptions_are_one_line_too() -> None:
    logger, stream = _logger()
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("failed")
    assert len(stream.getvalue().strip().splitlines()) == 1
    line = _line(stream)
    assert "ValueError: bad" in str(line["exception"])
