"""Fixtures shared by every suite (each suite runs under one process's settings)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.harness import ProcessHarness

# Local HTTP servers, signing keys and a JWKS server, for every suite.
pytest_plugins = ["tests.tokens", "tests.telemetry"]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[ProcessHarness]:
    """Start real Atrium processes (gunicorn services, Celery workers); all stopped afterwards."""
    h = ProcessHarness(Path(settings.ATRIUM_VAR_DIR) / "logs" / tmp_path.name)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def module_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessHarness]:
    """Like ``harness``, for processes shared by every test of a module (stateless ones)."""
    h = ProcessHarness(Path(settings.ATRIUM_VAR_DIR) / "logs" / tmp_path_factory.mktemp("module").name)
    try:
        yield h
    finally:
        h.close()
