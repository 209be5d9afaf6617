"""Create (or confirm) the demo admin user, the demo and services' machine clients and each service admin's
sign-in client (OpenID Connect, docs/sso.md); write var/dev-credentials.json."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.identity import services
from portal.identity.models import MachineClient

DEMO_ADMIN = "admin"
DEMO_CLIENT = "demo-client"
# Each service's own machine identity for the calls it makes (<SERVICE>_CLIENT_ID / _SECRET in its environment):
# every process registers in the catalog and heartbeats (audience portal, scope catalog:register); payments also
# holds and settles in the ledger; the portal's home reads the payments stats (docs/home.md) and its trace a
# payment's webhook messages (docs/trace.md); payments asks the risk service to assess payments; risk (a Node
# service) relays its audit events to the portal over HTTP (POST /api/v1/audit/events:ingest, docs/audit.md).
SERVICE_CLIENTS = {
    "portal": {
        "audiences": ["payments", "portal", "webhooks"],
        "scopes": ["catalog:register", "payments:read", "webhooks:read"],
    },
    "ledger": {"audiences": ["portal"], "scopes": ["catalog:register"]},
    "payments": {
        "audiences": ["ledger", "portal", "risk"],
        "scopes": ["catalog:register", "ledger:read", "ledger:write", "risk:assess"],
    },
    "webhooks": {"audiences": ["portal"], "scopes": ["catalog:register"]},
    "risk": {"audiences": ["portal"], "scopes": ["audit:ingest", "catalog:register"]},
}

# Each service admin signs people in at the portal with its own OpenID Connect client (<SERVICE>_OIDC_CLIENT_ID /
# _SECRET in its environment); its redirect URI is the service's /oidc/callback.
SSO_SERVICES = ("ledger", "payments", "webhooks")


class Command(BaseCommand):
    help = "Idempotently ensure the demo admin user and an all-audience demo machine client exist."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--credentials", required=True, help="JSON file to read and write credentials")
        parser.add_argument("--url", action="append", default=[], help="name=url, repeated")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.ATRIUM_ENV == "production":
            raise CommandError("demo_setup creates well-known demo credentials; it refuses to run in production.")
        path = Path(options["credentials"])
        saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

        User = get_user_model()
        password = saved.get("admin", {}).get("password") or secrets.token_urlsafe(12)
        user = User.objects.filter(username=DEMO_ADMIN).first()
        if user is None:
            User.objects.create_superuser(DEMO_ADMIN, email="admin@atrium.invalid", password=password)
        elif not user.check_password(password):
            user.set_password(password)
            user.save(update_fields=["password"])

        audiences = list(settings.ATRIUM_AUDIENCE_SCOPES)
        scopes = sorted({s for values in settings.ATRIUM_AUDIENCE_SCOPES.values() for s in values})
        client, secret = _client_ensure(
            DEMO_CLIENT,
            "Demo client for local development: every audience and scope.",
            audiences,
            scopes,
            saved.get("client", {}).get("client_secret", ""),
        )
        service_credentials = {}
        for service, grant in SERVICE_CLIENTS.items():
            own, own_secret = _client_ensure(
                f"{service}-service",
                f"The {service} service's own identity for the calls it makes.",
                grant["audiences"],
                grant["scopes"],
                saved.get("services", {}).get(service, {}).get("client_secret", ""),
            )
            service_credentials[service] = {"client_id": own.id, "client_secret": own_secret}

        urls = dict(item.split("=", 1) for item in options["url"]) or saved.get("urls", {})
        sso_credentials = {}
        for service in SSO_SERVICES:
            if service in urls:
                client_id, client_secret = _sso_client_ensure(
                    service, urls[service], saved.get("sso", {}).get(service, {}).get("client_secret", "")
                )
                sso_credentials[service] = {"client_id": client_id, "client_secret": client_secret}
        payload = {
            "admin": {"username": DEMO_ADMIN, "password": password},
            "client": {"client_id": client.id, "client_secret": secret},
            "services": service_credentials,
            "sso": sso_credentials,
            "urls": urls,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only from the first byte: the file holds secrets.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(payload, indent=2) + "\n")
        self.stdout.write(f"demo credentials written to {path}")


def _client_ensure(
    name: str, description: str, audiences: list[str], scopes: list[str], secret: str
) -> tuple[MachineClient, str]:
    """The named client with exactly these grants, active, and its secret (``secret`` kept if it still works)."""
    client = MachineClient.objects.filter(name=name).first()
    if client is None:
        return services.client_create(
            name=name, description=description, audiences=audiences, scopes=scopes, secret=secret or None
        )
    client.allowed_audiences, client.allowed_scopes = audiences, scopes
    client.is_active, client.revoked_at = True, None
    client.save(update_fields=["allowed_audiences", "allowed_scopes", "is_active", "revoked_at", "updated_at"])
    if not secret or services.secret_hash(secret) != client.secret_hash:
        secret = services.client_rotate_secret(client=client, grace_seconds=0)  # the old one was lost: no grace
    return client, secret


def _sso_client_ensure(service: str, url: str, secret: str) -> tuple[str, str]:
    """The service admin's OpenID Connect client at the portal (confidential, authorization code, RS256, no
    consent screen: a first-party admin), redirecting to ``url``/oidc/callback; its secret (kept if it still
    works: the portal stores only its hash)."""
    from oauth2_provider.models import get_application_model

    Application = get_application_model()
    name = f"{service}-admin"
    redirect = f"{url.rstrip('/')}/oidc/callback"
    app = Application.objects.filter(name=name).first()
    if app is None or not secret or not check_password(secret, app.client_secret):
        secret = secrets.token_urlsafe(32)
    fields = {
        "client_type": Application.CLIENT_CONFIDENTIAL,
        "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
        "redirect_uris": redirect,
        "post_logout_redirect_uris": f"{url.rstrip('/')}/admin/",
        "algorithm": Application.RS256_ALGORITHM,
        "skip_authorization": True,
        "client_secret": secret,
    }
    if app is None:
        app = Application(name=name, **fields)
    else:
        for field, value in fields.items():
            setattr(app, field, value)
    app.save()
    return app.client_id, secret
