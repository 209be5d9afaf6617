"""The webhooks service runs like the others: its own database migrated, gunicorn serving health, the API
behind a webhooks token, problem details for what is not there."""

from __future__ import annotations

import httpx

from tests.harness import ProcessHarness
from tests.tokens import JWKSServer, SigningKey


def test_the_service_serves_health_and_its_api_under_gunicorn(
    harness: ProcessHarness, jwks_server: JWKSServer, signing_key: SigningKey
) -> None:
    web = harness.web("webhooks", env={"JWT_JWKS_URL": jwks_server.url, "ATRIUM_OUTBOX_RELAY": "off"})
    with httpx.Client(base_url=web.url or "", timeout=10) as http:
        assert http.get("/health/live").status_code == 200
        assert http.get("/health/ready").status_code == 200
        token = signing_key.mint(aud="webhooks", scope="webhooks:read")
        whoami = http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert whoami.status_code == 200, whoami.text
        wrong_audience = http.get(
            "/api/v1/whoami", headers={"Authorization": f"Bearer {signing_key.mint(aud='payments')}"}
        )
        assert wrong_audience.status_code == 403
        assert wrong_audience.json()["code"] == "invalid_audience"
        missing = http.get("/api/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
