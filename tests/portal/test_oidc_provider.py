"""The portal as an OpenID Connect provider for people (portal/identity/oidc.py, docs/sso.md), in process: the
discovery document and the URL rule, PKCE required, the ID token signed RS256 with the key the kit's loader gave,
and the roles claim. The flow across real processes and a browser: tests/e2e/test_sso_browser.py."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from django.test import Client
from oauth2_provider.models import get_application_model

from tests.portal.factories import user_with_role

pytestmark = pytest.mark.django_db

REDIRECT = "https://payments.example.test/oidc/callback"
SECRET = "a-client-secret-" + "s" * 24


@pytest.fixture
def application():
    Application = get_application_model()
    return Application.objects.create(
        name="payments-admin",
        client_id="payments-admin",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT,
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=True,
    )


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _authorize(client: Client, **params: str):
    query = {"response_type": "code", "client_id": "payments-admin", "redirect_uri": REDIRECT, "state": "st"}
    return client.get(f"/o/authorize?{urlencode({**query, **params})}")


def test_discovery_names_the_endpoints_without_trailing_slashes_and_only_safe_choices():
    response = Client().get("/.well-known/openid-configuration")

    assert response.status_code == 200
    doc = response.json()
    assert doc["issuer"] == "http://testserver"
    assert doc["authorization_endpoint"] == "http://testserver/o/authorize"
    assert doc["token_endpoint"] == "http://testserver/o/token"
    assert doc["userinfo_endpoint"] == "http://testserver/o/userinfo"
    assert doc["jwks_uri"] == "http://testserver/o/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "RS256" in doc["id_token_signing_alg_values_supported"]


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration/", "/o/authorize/", "/o/token/", "/o/userinfo/", "/o/jwks/"]
)
def test_the_slashed_spelling_answers_308_to_the_canonical_one(path):
    response = Client().get(path + "?a=1")

    assert response.status_code == 308
    assert response["Location"] == path.rstrip("/") + "?a=1"


def test_the_id_token_key_is_the_rsa_dev_key_the_kit_generated(settings):
    keys = Client().get("/o/jwks").json()["keys"]

    assert [k["kty"] for k in keys] == ["RSA"]
    assert (Path(settings.ATRIUM_VAR_DIR) / "keys" / "oidc-signing-rsa.pem").is_file()


def test_an_authorization_request_without_pkce_is_refused(application):
    client = Client()
    client.force_login(user_with_role("viewer"))

    response = _authorize(client, scope="openid")

    assert response.status_code == 302
    assert parse_qs(urlsplit(response["Location"]).query)["error"] == ["invalid_request"]


def test_a_plain_pkce_challenge_is_refused(application):
    client = Client()
    client.force_login(user_with_role("viewer"))
    verifier, _ = _pkce()

    response = _authorize(client, scope="openid", code_challenge=verifier, code_challenge_method="plain")

    assert response.status_code == 302
    assert "code" not in parse_qs(urlsplit(response["Location"]).query)


def test_an_anonymous_silent_request_answers_login_required_to_the_client(application):
    _, challenge = _pkce()

    response = _authorize(
        Client(), scope="openid", prompt="none", code_challenge=challenge, code_challenge_method="S256"
    )

    assert response.status_code == 302
    assert response["Location"].startswith(REDIRECT)
    assert parse_qs(urlsplit(response["Location"]).query)["error"] == ["login_required"]


def test_the_code_flow_gives_an_rs256_id_token_and_userinfo_with_the_persons_roles(application):
    # given an operator logged in at the portal
    person = user_with_role("operator")
    client = Client()
    client.force_login(person)
    verifier, challenge = _pkce()

    # when a service asks for a code (PKCE) and exchanges it
    answer = _authorize(
        client, scope="openid profile email", nonce="n1", code_challenge=challenge, code_challenge_method="S256"
    )
    assert answer.status_code == 302, answer.content[:500]
    code = parse_qs(urlsplit(answer["Location"]).query)["code"][0]
    token = Client().post(
        "/o/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "payments-admin",
            "client_secret": SECRET,
            "code_verifier": verifier,
        },
    )
    assert token.status_code == 200, token.content
    body = token.json()

    # then the ID token is signed RS256 by the published key, and names the person and their roles
    jwk = Client().get("/o/jwks").json()["keys"][0]
    key = jwt.PyJWK.from_json(json.dumps(jwk)).key
    claims = jwt.decode(body["id_token"], key, algorithms=["RS256"], audience="payments-admin")
    assert claims["sub"] == str(person.pk)
    assert claims["nonce"] == "n1"
    assert claims["preferred_username"] == person.username
    assert claims["roles"] == ["operator"]

    # and userinfo says the same
    info = Client().get("/o/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}").json()
    assert (info["sub"], info["roles"]) == (str(person.pk), ["operator"])

    # and the code is single-use
    again = Client().post(
        "/o/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "payments-admin",
            "client_secret": SECRET,
            "code_verifier": verifier,
        },
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_a_code_cannot_be_exchanged_without_its_verifier(application):
    client = Client()
    client.force_login(user_with_role("viewer"))
    _, challenge = _pkce()
    answer = _authorize(client, scope="openid", code_challenge=challenge, code_challenge_method="S256")
    code = parse_qs(urlsplit(answer["Location"]).query)["code"][0]

    token = Client().post(
        "/o/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "payments-admin",
            "client_secret": SECRET,
            "code_verifier": secrets.token_urlsafe(48),
        },
    )

    assert token.status_code == 400
    assert token.json()["error"] == "invalid_grant"


def test_expired_sign_in_codes_and_tokens_are_cleared_and_live_ones_kept(application):
    import datetime as dt

    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_grant_model

    from portal.identity.oidc import sso_tokens_clear

    # given a person's codes and tokens, one of each expired and one of each alive
    person = user_with_role("viewer")
    now = timezone.now()
    AccessToken, Grant = get_access_token_model(), get_grant_model()
    for n, expires in enumerate([now - dt.timedelta(minutes=1), now + dt.timedelta(minutes=5)]):
        AccessToken.objects.create(user=person, application=application, token=f"t{n}", expires=expires, scope="openid")
        Grant.objects.create(
            user=person,
            application=application,
            code=f"c{n}",
            expires=expires,
            redirect_uri=REDIRECT,
            scope="openid",
            code_challenge="x" * 43,
            code_challenge_method="S256",
        )

    # when the hourly clean-up runs
    remaining = sso_tokens_clear()

    # then only the live ones are left
    assert remaining == 0
    assert AccessToken.objects.count() == 1
    assert Grant.objects.get().code == "c1"
