"""Gunicorn settings for every Atrium web process (read from the working directory)."""

import datetime as dt
import os
from typing import Any

from gunicorn.glogging import Logger

from services.kit.conf import logging_config, web_layout

_service = os.environ.get("DJANGO_SETTINGS_MODULE", "portal.settings").split(".")[-2]

# WEB_CONCURRENCY / WEB_THREADS, else 2 x usable cores + 1 workers with 2 threads each.
workers, threads = web_layout()
# gthread (threads > 1) or sync, as gunicorn would pick, answering gunicorn's own errors (431, 400, 414...) as
# problem details instead of HTML pages.
worker_class = "services.kit.webserver.ProblemWorker"
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Recycle workers now and then so a slow leak never becomes an outage: at a few hundred requests a second a
# worker lives minutes, not seconds (a new one costs a second or two of CPU to start).
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", "50000"))
max_requests_jitter = max_requests // 10
# Processes are supervised from outside (`make up`'s supervisor, Kubernetes); the control socket's
# default path ($HOME/.gunicorn/gunicorn.ctl) would be shared by every service on a host.
control_socket_disable = True


class KitLogger(Logger):
    """gunicorn's logger without its access lines: the kit's middleware logs every request as JSON
    (with request id, view and duration), so gunicorn's line would be a second, unstructured copy."""

    def access(self, resp, req, environ, request_time) -> None:  # noqa: ANN001
        return None


logger_class = KitLogger
accesslog = None
errorlog = "-"
logconfig_dict = logging_config(service=_service, level=os.environ.get("LOG_LEVEL", "INFO"))
logconfig_dict["loggers"].update(
    {
        "gunicorn.error": {"level": "INFO", "propagate": True},
    }
)


# This server — its master process — is one instance in the service catalog: set once here, where the master
# reads this file, and seen by every worker it forks.
_master_pid = os.getpid()
_started_at = dt.datetime.now(dt.UTC)


def post_worker_init(worker: Any) -> None:
    """Each worker heartbeats the server's instance and reports the calls it served (a background thread that
    retries while the portal is away: it never delays or stops the server)."""
    from services.kit.catalog import web_agent_start

    web_agent_start(bind=list(worker.cfg.bind), master_pid=_master_pid, started_at=_started_at)

    # Revoked clients: this worker's watcher thread, and its first copy before the first request.
    from services.kit.revocations import revocations_watch

    revocations_watch()


def worker_exit(server: Any, worker: Any) -> None:
    """Send the calls counted since the last report before the worker goes."""
    from services.kit.catalog import agent_stop

    agent_stop()
