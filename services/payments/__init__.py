"""The payments service: idempotent payment orders processed by Celery (its own Django project)."""
