"""The Celery app of processes that only send or watch tasks (Flower's `-A`): workers' config, no task code."""

from __future__ import annotations

from shared.celery_config import make_celery
from shared.settings import get_settings

app = make_celery(get_settings())
