"""The Celery app a GPU worker runs: `celery -A worker.celery_app worker`."""

from shared.logs import configure_logging
from shared.queue import make_celery
from shared.settings import get_settings
from worker import tasks

configure_logging(get_settings().log_level, get_settings().log_format)
app = make_celery(get_settings())
# Filled by the celeryd_after_setup signal once the model is loaded; the task runs with it.
runtime = tasks.WorkerRuntime()
tasks.register(app, runtime)
tasks.connect_signals(runtime)
