"""A service's admin driven in a browser, people signing in at the live portal (docs/sso.md): the service under
gunicorn on its own database (seeded by its own ``manage.py shell``), its sign-in client at the portal as
``demo_setup`` makes it, and reads of its database (rows, the audit events waiting in its outbox). Shared by the
browser tests of the webhooks and payments admins."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import psycopg

from devtools.infra import REPO_ROOT, free_port
from tests.harness import MANAGE, AtriumProcess, ProcessHarness, base_env


@dataclass
class ServiceAdmin:
    portal: AtriumProcess
    service: AtriumProcess
    database_url: str
    ids: dict[str, Any]

    @property
    def portal_url(self) -> str:
        return self.portal.url or ""

    @property
    def url(self) -> str:
        return self.service.url or ""

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(query, params or [])
            return cursor.fetchall() if cursor.description else []

    def audited(self, action: str) -> list[dict[str, Any]]:
        """The audit events ``action`` in the service's outbox (its relay is off: they stay there), oldest first."""
        rows = self.sql(
            "SELECT payload FROM kit_outbox_event WHERE topic = 'audit' AND payload->>'action' = %s ORDER BY id",
            [action],
        )
        return [row[0] for row in rows]


def service_admin_start(
    name: str, portal: AtriumProcess, harness: ProcessHarness, *, seed: str, client_id: str, client_secret: str
) -> ServiceAdmin:
    """Service ``name`` on a fresh database seeded by ``seed`` (Python run by its ``manage.py shell``; its last
    output line is JSON: the ids), signing people in at ``portal`` with the given sign-in client."""
    database_url = harness.service_database(name)
    seeded = subprocess.run(
        [sys.executable, MANAGE[name], "shell", "-c", seed],
        env=base_env(name, database_url),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    ids = json.loads(seeded.stdout.strip().splitlines()[-1])
    service = harness.web(
        name,
        database_url=database_url,
        port=free_port(),
        env={
            "JWT_JWKS_URL": f"{portal.url}/.well-known/jwks.json",
            "ATRIUM_OUTBOX_RELAY": "off",  # the audit events stay in the outbox, where the test reads them
            "ATRIUM_SSO_URL": portal.url or "",
            f"{name.upper()}_OIDC_CLIENT_ID": client_id,
            f"{name.upper()}_OIDC_CLIENT_SECRET": client_secret,
        },
    )
    return ServiceAdmin(portal, service, database_url, ids)


def sso_application(*, name: str, client_id: str, client_secret: str, service_url: str) -> None:
    """A service admin's sign-in client at the portal, as ``demo_setup`` makes it (in the test's database)."""
    from oauth2_provider.models import get_application_model

    application = get_application_model()
    application.objects.create(
        name=name,
        client_id=client_id,
        client_secret=client_secret,
        client_type=application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=f"{service_url}/oidc/callback",
        algorithm=application.RS256_ALGORITHM,
        skip_authorization=True,
    )
