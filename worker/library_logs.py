"""In JSON log mode, make the ML libraries' output JSON lines too.

transformers and diffusers log through handlers of their own ("[transformers]
..." on stderr) and draw tqdm progress bars while loading; Celery prints a text
banner at start. Each of those would be a line a log pipeline cannot parse.
"""

from __future__ import annotations

from typing import Any


def route_library_logs() -> None:
    """Send transformers' and diffusers' records to the root (JSON) handler, no bars.

    Called before the model loader imports them, so that warnings they log at
    import time are routed too.
    """
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    for library in (transformers_logging, diffusers_logging):
        library.disable_default_handler()
        library.enable_propagation()
        library.disable_progress_bar()


def quiet_banner(instance: Any) -> None:
    """No text banner from a starting Celery worker (`instance`: celery.apps.worker.Worker)."""
    instance.quiet = True
