"""For the hostile SSRF test (tests/e2e/test_hostile.py, section 3): a portal and a portal worker whose outbound
guard allows only 127.0.0.2/32 (so 127.0.0.1, where the portal itself and the test's listener run, is inside),
a machine client that registers services as an attacker would, and a logged-in reader of the portal's pages."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from devtools.infra import free_port
from portal.identity import services as identity
from tests.harness import AtriumProcess, ProcessHarness, current_test_database_url
from tests.portal.factories import PASSWORD, user_with_role

# The only network the hostile portal may reach: a loopback address other than 127.0.0.1.
ALLOWED = "127.0.0.2/32"


@dataclass
class HostilePortal:
    portal: AtriumProcess
    worker: AtriumProcess
    attacker: httpx.Client  # a machine client's token with catalog:register and portal:read
    pages: httpx.Client  # a viewer logged in to the admin

    def register(self, slug: str, base_url: str, health_url: str) -> httpx.Response:
        return self.attacker.put(
            f"/api/v1/catalog/services/{slug}",
            json={"display_name": slug, "base_url": base_url, "health_url": health_url},
        )

    def checks(self, slug: str) -> list[dict[str, Any]]:
        response = self.attacker.get(f"/api/v1/catalog/services/{slug}/health")
        assert response.status_code == 200, response.text
        return response.json()["results"]

    def requested_paths(self) -> list[str]:
        """Paths of the requests the portal's web process logged."""
        return [r.get("path", "") for r in self.portal.log_records() if r.get("event") == "http.request"]


def _token(base: str, client_id: str, secret: str) -> str:
    response = httpx.post(
        f"{base}/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "audience": "portal",
            "scope": "catalog:register portal:read",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _logged_in(base: str, username: str) -> httpx.Client:
    """An admin session through the real login form."""
    session = httpx.Client(base_url=base, timeout=10)
    form = session.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token, form.text[:2000]
    response = session.post(
        "/admin/login/?next=/admin/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)},
        headers={"Referer": f"{base}/admin/login/"},
    )
    assert response.status_code == 302, response.text[:2000]
    return session


def hostile_portal_start(harness: ProcessHarness) -> HostilePortal:
    """The portal (gunicorn) and a ``portal`` worker (the health poller) on this test's database, both with
    ``ATRIUM_OUTBOUND_ALLOW_NETWORKS=127.0.0.2/32``."""
    env = {"ATRIUM_OUTBOUND_ALLOW_NETWORKS": ALLOWED}
    database = current_test_database_url()
    portal = harness.web("portal", database_url=database, env=env, port=free_port())
    worker = harness.worker("portal", database_url=database, env=env)
    client, secret = identity.client_create(
        name=f"attacker-{uuid.uuid4().hex[:6]}", audiences=["portal"], scopes=["catalog:register", "portal:read"]
    )
    base = portal.url or ""
    attacker = httpx.Client(
        base_url=base, timeout=10, headers={"Authorization": f"Bearer {_token(base, client.id, secret)}"}
    )
    viewer = user_with_role("viewer")
    return HostilePortal(portal, worker, attacker, _logged_in(base, viewer.get_username()))
