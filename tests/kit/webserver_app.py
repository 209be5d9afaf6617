"""A WSGI application with no Django, for running the kit's gunicorn workers alone (tests/kit/test_webserver.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answers what it received: the body's length and whether the worker runs threads."""
    body = environ["wsgi.input"].read()
    answer = {"length": len(body), "multithread": environ.get("wsgi.multithread")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]
