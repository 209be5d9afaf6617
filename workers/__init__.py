"""Atrium's Celery app: ``celery -A workers worker -Q <queue>``.

Which tasks a worker can run depends on its ``DJANGO_SETTINGS_MODULE``: each
service's settings list its own task modules in ``CELERY_IMPORTS``.
"""

from workers.celery import app

__all__ = ["app"]
