"""POST /api/v1/auth/token: the OAuth 2.0 client-credentials grant."""

from __future__ import annotations

import base64
import time
from urllib.parse import quote_plus, urlencode

import jwt
import pytest
from django.conf import settings

from portal.identity.models import MachineClient
from tests.portal.factories import machine_client
from tests.portal.helpers import TOKEN_URL
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db


def _without_request_id(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "request_id"}


def _assert_token_response(response, *, scope: str, expires_in: int = 900) -> str:
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == expires_in
    assert body["scope"] == scope
    return body["access_token"]


def test_json_body_gets_a_bearer_token(request_token):
    # given a client allowed ledger:read
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read"])

    # when it asks for a ledger token with a JSON body
    response = request_token(machine.token_request("ledger"))

    # then it gets a non-cacheable bearer token
    _assert_token_response(response, scope="ledger:read")


def test_form_body_gets_a_bearer_token(client):
    # given a client
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read"], token_ttl_seconds=600)

    # when it asks with an application/x-www-form-urlencoded body (what most OAuth libraries send)
    response = client.post(
        TOKEN_URL, urlencode(machine.token_request("ledger")), content_type="application/x-www-form-urlencoded"
    )

    # then it gets a token that lives as long as the client's configured lifetime
    _assert_token_response(response, scope="ledger:read", expires_in=600)


def test_http_basic_client_authentication_works(client):
    # given a client's credentials form-encoded then Basic-encoded (RFC 6749 §2.3.1)
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    credentials = base64.b64encode(f"{quote_plus(machine.id)}:{quote_plus(machine.secret)}".encode()).decode()

    # when only grant_type and audience travel in the body
    response = client.post(
        TOKEN_URL,
        urlencode({"grant_type": "client_credentials", "audience": "ledger"}),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Basic {credentials}",
    )

    # then the Basic credentials authenticate the client
    _assert_token_response(response, scope="ledger:read")


def test_basic_and_body_secret_together_get_400_invalid_request(client):
    # given a client that sends its secret both as Basic credentials and in the body
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read"])
    credentials = base64.b64encode(f"{quote_plus(machine.id)}:{quote_plus(machine.secret)}".encode()).decode()

    # when it asks for a token
    response = client.post(
        TOKEN_URL,
        urlencode({**machine.token_request("ledger")}),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Basic {credentials}",
    )

    # then RFC 6749 §2.3's one-method rule is enforced
    body = assert_problem(response, 400, "invalid_request")
    assert body["error"] == "invalid_request"


def test_invalid_client_names_the_basic_scheme(request_token):
    # given a wrong secret
    machine = machine_client()

    # when the token endpoint refuses it
    response = request_token({**machine.token_request("ledger"), "client_secret": "cs_wrong"})

    # then the 401 says how to authenticate (RFC 6749 §5.2)
    assert_problem(response, 401, "invalid_client")
    assert response["WWW-Authenticate"] == 'Basic realm="atrium"'


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic %%%not-base64%%%", id="not-base64"),
        pytest.param(f"Basic {base64.b64encode(b'no-colon-here').decode()}", id="no-colon"),
    ],
)
def test_malformed_basic_credentials_get_401_invalid_client(client, authorization):
    response = client.post(
        TOKEN_URL,
        urlencode({"grant_type": "client_credentials", "audience": "ledger"}),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=authorization,
    )

    body = assert_problem(response, 401, "invalid_client")
    assert body["detail"] == "Malformed Basic credentials."


def test_missing_client_credentials_get_401_invalid_client(request_token):
    response = request_token({"grant_type": "client_credentials", "audience": "ledger"})

    body = assert_problem(response, 401, "invalid_client")
    assert body["error"] == "invalid_client"


def test_token_verifies_against_the_published_jwks(client, request_token, fresh_key_caches):
    # given a client with a 10-minute token lifetime
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read", "ledger:write"], token_ttl_seconds=600)
    before = int(time.time())

    # when it gets a token and a verifier fetches the portal's key set
    token = _assert_token_response(
        request_token(machine.token_request("ledger")), scope="ledger:read ledger:write", expires_in=600
    )
    key_set = client.get("/.well-known/jwks.json").json()

    # then the token's header names the published key and algorithm
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    (published,) = [k for k in key_set["keys"] if k["kid"] == header["kid"]]
    # and PyJWT verifies signature, issuer and audience with that key alone
    claims = jwt.decode(
        token,
        key=jwt.PyJWK(published).key,
        algorithms=["EdDSA"],
        audience="ledger",
        issuer=settings.JWT_ISSUER,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert claims["iss"] == "atrium-portal"
    assert claims["aud"] == "ledger"
    assert claims["sub"] == machine.id
    assert claims["client_id"] == machine.id
    assert claims["client_name"] == machine.client.name
    assert claims["scope"] == "ledger:read ledger:write"
    assert claims["jti"].startswith("tok_")
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 600
    # and a verifier expecting another audience refuses it
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key=jwt.PyJWK(published).key, algorithms=["EdDSA"], audience="payments")


def test_omitted_scope_grants_all_client_scopes_of_that_audience_only(request_token):
    # given a client allowed ledger:read and payments:read
    machine = machine_client(audiences=["ledger", "payments"], scopes=["ledger:read", "payments:read"])

    # when it asks for a ledger token without naming scopes
    response = request_token(machine.token_request("ledger"))

    # then it gets the ledger scope, not the payments one
    token = _assert_token_response(response, scope="ledger:read")
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "ledger:read"


def test_narrower_scope_is_honoured(request_token):
    # given a client allowed to read and write the ledger
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read", "ledger:write"])

    # when it asks for read only
    response = request_token(machine.token_request("ledger", scope="ledger:read"))

    # then it gets read only
    token = _assert_token_response(response, scope="ledger:read")
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "ledger:read"


def test_wrong_secret_gets_401_invalid_client(request_token):
    # given a client
    machine = machine_client()

    # when the secret is wrong
    response = request_token({**machine.token_request("ledger"), "client_secret": machine.secret + "x"})

    # then the OAuth error rides alongside Atrium's code, and nothing was recorded as used
    body = assert_problem(response, 401, "invalid_client")
    assert body["error"] == "invalid_client"
    assert body["instance"] == TOKEN_URL
    assert "access_token" not in body
    assert MachineClient.objects.get(pk=machine.id).last_used_at is None


def test_unknown_client_gets_the_same_401_as_a_wrong_secret(request_token):
    # given a real client and an id nobody has
    machine = machine_client()
    wrong_secret = request_token({**machine.token_request("ledger"), "client_secret": "cs_wrong"})

    # when an unknown client id asks for a token
    unknown = request_token({**machine.token_request("ledger"), "client_id": "cli_00000000000000000000000000"})

    # then the answer is indistinguishable from a wrong secret (no client enumeration)
    body = assert_problem(unknown, 401, "invalid_client")
    assert _without_request_id(body) == _without_request_id(assert_problem(wrong_secret, 401, "invalid_client"))


def test_revoked_client_gets_401_invalid_client(request_token):
    # given a revoked client presenting its correct secret
    machine = machine_client(revoked=True)

    # when it asks for a token
    response = request_token(machine.token_request("ledger"))

    # then it is refused exactly like an unknown client
    body = assert_problem(response, 401, "invalid_client")
    assert body["error"] == "invalid_client"
    assert body["detail"] == "Unknown client, wrong secret, or revoked client."


def test_audience_not_allowed_gets_403(request_token):
    # given a client allowed only the ledger
    machine = machine_client(audiences=["ledger"], scopes=["ledger:read"])

    # when it asks for a payments token
    response = request_token(machine.token_request("payments"))

    # then it is refused with the OAuth "invalid_target" error
    body = assert_problem(response, 403, "audience_not_allowed")
    assert body["error"] == "invalid_target"


@pytest.mark.parametrize(
    ("scope", "refused"),
    [
        pytest.param("ledger:write", "ledger:write", id="scope-not-granted"),
        pytest.param("payments:read", "payments:read", id="scope-of-another-audience"),
        pytest.param("ledger:read nonsense:scope", "nonsense:scope", id="unknown-scope"),
    ],
)
def test_scope_not_allowed_gets_403(request_token, scope, refused):
    # given a client allowed ledger:read and payments:read
    machine = machine_client(audiences=["ledger", "payments"], scopes=["ledger:read", "payments:read"])

    # when it asks a ledger token for a scope it may not have there
    response = request_token(machine.token_request("ledger", scope=scope))

    # then it is refused and told which scope
    body = assert_problem(response, 403, "scope_not_allowed")
    assert body["error"] == "invalid_scope"
    assert refused in body["detail"]


def test_password_grant_gets_400_unsupported_grant_type(request_token):
    machine = machine_client()

    response = request_token({**machine.token_request("ledger"), "grant_type": "password"})

    body = assert_problem(response, 400, "unsupported_grant_type")
    assert body["error"] == "unsupported_grant_type"


def test_missing_audience_gets_400_validation_error(request_token):
    # given a token request without an audience
    machine = machine_client()
    body = machine.token_request("ledger")
    del body["audience"]

    # when it is sent
    response = request_token(body)

    # then the error names the field
    problem_body = assert_problem(response, 400, "validation_error")
    assert problem_body["errors"] == [
        {"field": "audience", "pointer": "#/audience", "code": "required", "detail": "This field is required."}
    ]


def test_unknown_field_gets_400_unknown_field(request_token):
    machine = machine_client()

    response = request_token({**machine.token_request("ledger"), "redirect_uri": "https://evil.example"})

    body = assert_problem(response, 400, "validation_error")
    assert [(e["field"], e["code"]) for e in body["errors"]] == [("redirect_uri", "unknown_field")]


def test_malformed_json_gets_400_malformed_json(client):
    response = client.post(TOKEN_URL, '{"grant_type": "client_credentials",', content_type="application/json")

    assert_problem(response, 400, "malformed_json")


def test_text_plain_body_gets_415(client):
    response = client.post(TOKEN_URL, "grant_type=client_credentials", content_type="text/plain")

    assert_problem(response, 415, "unsupported_media_type")


def test_successful_token_request_records_last_use(request_token):
    # given a client never used
    machine = machine_client()
    assert MachineClient.objects.get(pk=machine.id).last_used_at is None

    # when it gets a token
    response = request_token(machine.token_request("ledger"))

    # then the time of use is recorded
    assert response.status_code == 200
    client = MachineClient.objects.get(pk=machine.id)
    assert client.last_used_at is not None
    assert client.last_used_at >= client.created_at
