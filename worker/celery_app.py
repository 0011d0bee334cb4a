"""The Celery app a GPU worker runs: `celery -A worker.celery_app worker`."""

from shared.logs import configure_logging
from shared.queue import make_celery
from shared.settings import get_settings
from worker import tasks

configure_logging(get_settings().log_level)
app = make_celery(get_settings())
tasks.register(app)
