"""Gunicorn settings for every Atrium web process (read from the working directory)."""

import os

from services.kit.conf import logging_config

_service = os.environ.get("DJANGO_SETTINGS_MODULE", "portal.settings").split(".")[-2]

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Recycle workers now and then so a slow leak never becomes an outage.
max_requests = 5000
max_requests_jitter = 500
# Processes are supervised from outside (honcho, Kubernetes); the control socket's
# default path ($HOME/.gunicorn/gunicorn.ctl) would be shared by every service on a host.
control_socket_disable = True
accesslog = None  # each request is logged as JSON by the kit's middleware
errorlog = "-"
logconfig_dict = logging_config(service=_service, level=os.environ.get("LOG_LEVEL", "INFO"))
logconfig_dict["loggers"].update(
    {
        "gunicorn.error": {"level": "INFO", "propagate": True},
        "gunicorn.access": {"level": "INFO", "propagate": True},
    }
)
