"""The endpoints API: create (SSRF guard, event-type patterns, secrets), list with stats, change, enable,
disable, delete, secrets (read, rotate, verified with the standardwebhooks package), the v1a public key, scopes,
and an audit event for every change and every refusal."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.kit.models import OutboxEvent
from services.webhooks import secrets, signing
from services.webhooks.models import Attempt, Endpoint
from tests.problems import assert_problem
from tests.webhooks.conftest import WebhooksAPI

pytestmark = pytest.mark.django_db

PUBLIC_URL = "https://93.184.216.34/hooks"  # a public address: allowed without an allow-list, no DNS needed


def audits(action: str, outcome: str | None = None) -> list[dict[str, Any]]:
    events = [e.payload for e in OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")]
    return [e for e in events if e["action"] == action and (outcome is None or e["outcome"] == outcome)]


def create(api: WebhooksAPI, **fields: Any) -> Any:
    return api.post("endpoints", {"url": PUBLIC_URL, "event_types": ["payment.*"], **fields})


def created(api: WebhooksAPI, **fields: Any) -> dict[str, Any]:
    response = create(api, **fields)
    assert response.status_code == 201, response.content
    return response.json()


# ------------------------------------------------------------------------------------------------ create


def test_an_endpoint_is_created_with_a_generated_secret_that_is_never_shown_and_its_audit_event(api):
    response = create(
        api,
        description="merchant 1042",
        event_types=["payment.settled", "payment.failed"],
        channels=["acc_1", "acc_2"],
        rate_limit=50,
        max_in_flight=4,
        ordered=True,
        metadata={"merchant": "1042"},
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"].startswith("ep_")
    assert (body["url"], body["description"]) == (PUBLIC_URL, "merchant 1042")
    assert body["event_types"] == ["payment.settled", "payment.failed"]
    assert body["channels"] == ["acc_1", "acc_2"]
    assert (body["rate_limit"], body["max_in_flight"], body["ordered"], body["v1a"]) == (50, 4, True, False)
    assert (body["enabled"], body["disabled_reason"], body["metadata"]) == (True, "", {"merchant": "1042"})
    assert body["stats"] == {"attempts": 0, "succeeded": 0, "success_rate": None}
    # the secret is nowhere in the answer, and stored encrypted
    assert "whsec_" not in response.content.decode()
    assert "secret" not in body
    assert "signing_key" not in body
    stored = Endpoint.objects.get(id=body["id"])
    assert not stored.secret.startswith("whsec_")
    plain = secrets.decrypt(stored.secret)
    assert plain.startswith("whsec_")
    assert len(base64.b64decode(plain[6:])) == 32
    # audited, the secret left out
    [event] = audits("webhooks.endpoint.created")
    assert event["outcome"] == "success"
    assert event["object"] == {"type": "endpoint", "id": body["id"]}
    assert event["actor"]["id"] == "cli_test"
    assert event["metadata"]["url"] == PUBLIC_URL
    assert event["metadata"]["secret_given"] is False
    assert plain not in json.dumps(event)
    assert stored.secret not in json.dumps(event)


def test_defaults(api):
    body = created(api)
    assert body["channels"] == []
    assert body["rate_limit"] is None
    assert (body["max_in_flight"], body["ordered"], body["metadata"], body["description"]) == (10, False, {}, "")


@pytest.mark.parametrize("size", [24, 32, 64])
def test_a_callers_secret_of_24_to_64_bytes_is_kept(api, size):
    secret = "whsec_" + base64.b64encode(bytes(range(size))).decode()
    body = created(api, secret=secret)
    assert secrets.decrypt(Endpoint.objects.get(id=body["id"]).secret) == secret
    [event] = audits("webhooks.endpoint.created")
    assert event["metadata"]["secret_given"] is True
    assert secret not in json.dumps(event)


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(b"x" * 23).decode(),  # too short
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # too long
        base64.b64encode(b"x" * 32).decode(),  # no prefix
        "whsec_not base64!!",
        "whsec_",
    ],
)
def test_a_bad_callers_secret_is_refused_and_the_refusal_audited(api, secret):
    response = create(api, secret=secret)

    body = assert_problem(response, 422, "invalid_secret")
    assert not secret[6:] or secret[6:] not in body["detail"]  # never echoed
    assert Endpoint.objects.count() == 0
    [refusal] = audits("webhooks.endpoint.created", "failure")
    assert refusal["metadata"]["code"] == "invalid_secret"


# ------------------------------------------------------------------------------------------------ SSRF on save


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "blocked"),
        ("http://127.0.0.1:8003/api/v1/endpoints", "blocked"),
        ("http://localhost:8000/", "blocked"),
        ("http://10.0.0.7/", "blocked"),
        ("http://172.16.1.1/", "blocked"),
        ("http://192.168.1.1/", "blocked"),
        ("http://100.64.0.1/", "blocked"),
        ("http://169.254.169.254/latest/meta-data/", "blocked"),
        ("http://[::1]/", "blocked"),
        ("http://[fd00::1]/", "blocked"),
        ("http://[fe80::1]/", "blocked"),
        ("http://[::ffff:127.0.0.1]/", "blocked"),
        ("http://[2002:7f00:1::]/", "blocked"),
        ("http://2130706433/", "blocked"),  # 127.0.0.1 in decimal
        ("http://0177.0.0.1/", "blocked"),  # octal
        ("http://0x7f.1/", "blocked"),  # hex
        ("http://0.0.0.0/", "blocked"),
        ("http://224.0.0.1/", "blocked"),
        ("ftp://93.184.216.34/", "invalid_url"),
        ("http://user:pass@93.184.216.34/", "invalid_url"),
        ("javascript:alert(1)", "invalid_url"),
        ("http://exa mple.com/", "invalid_url"),
        ("not a url", "invalid_url"),
        ("https://atrium-test.invalid/hook", "dns"),  # RFC 6761: never resolves
    ],
)
def test_a_url_the_guard_refuses_is_422_with_the_reason_and_audited(api, settings, url, reason):
    settings.WEBHOOKS_ALLOWED_NETWORKS = []  # the test runner allow-lists 127.0.0.1 for its receivers
    response = create(api, url=url)

    body = assert_problem(response, 422, "endpoint_url_not_allowed")
    assert body["reason"] == reason
    assert Endpoint.objects.count() == 0
    [refusal] = audits("webhooks.endpoint.created", "failure")
    assert refusal["metadata"]["code"] == "endpoint_url_not_allowed"


def test_an_allow_listed_network_may_be_used(api, settings):
    settings.WEBHOOKS_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    assert created(api, url="http://127.0.0.1:9/hook")["url"] == "http://127.0.0.1:9/hook"
    # the allow-list is exact: the rest of loopback stays refused
    assert assert_problem(create(api, url="http://127.0.0.2/hook"), 422, "endpoint_url_not_allowed")["reason"] == (
        "blocked"
    )


def test_production_requires_https_unless_the_address_is_allow_listed(api, settings):
    settings.ATRIUM_ENV = "production"
    settings.WEBHOOKS_ALLOWED_NETWORKS = ["127.0.0.1/32"]

    plain = create(api, url="http://93.184.216.34/hooks")
    assert assert_problem(plain, 422, "endpoint_url_not_allowed")["reason"] == "https_required"
    assert created(api, url="https://93.184.216.34/hooks")
    assert created(api, url="http://127.0.0.1:9/hook")  # allow-listed: http is fine


def test_dev_takes_http_to_a_public_address(api):
    assert created(api, url="http://93.184.216.34/hooks")["url"] == "http://93.184.216.34/hooks"


# ------------------------------------------------------------------------------------------------ event types


@pytest.mark.parametrize(
    "patterns", [["payment.settled"], ["payment.*"], ["*"], ["ledger.*", "payment.failed"], ["ledger.transaction.*"]]
)
def test_patterns_that_match_known_types_are_taken(api, patterns):
    assert created(api, event_types=patterns)["event_types"] == patterns


@pytest.mark.parametrize(
    "patterns",
    [["payment.refunded"], ["invoice.*"], ["payment.settled", "payment.exploded"], ["payment.settled.*"]],
)
def test_a_pattern_that_matches_no_known_type_is_422(api, patterns):
    body = assert_problem(create(api, event_types=patterns), 422, "unknown_event_type")
    assert body["event_types"]
    assert audits("webhooks.endpoint.created", "failure")[0]["metadata"]["code"] == "unknown_event_type"


@pytest.mark.parametrize(
    "patterns",
    [[], ["Payment.settled"], ["payment."], ["payment"], ["*.settled"], ["payment.**"], [""], "payment.*", [7]],
)
def test_a_malformed_pattern_list_is_a_validation_error_and_audited(api, patterns):
    assert_problem(create(api, event_types=patterns), 400, "validation_error")
    assert Endpoint.objects.count() == 0
    assert audits("webhooks.endpoint.created", "failure")[0]["metadata"]["code"] == "validation_error"


@pytest.mark.parametrize(
    "fields",
    [
        {"rate_limit": 0},
        {"max_in_flight": 0},
        {"max_in_flight": 5000},
        {"channels": "acc_1"},
        {"channels": [""]},
        {"url": 7},
        {"colour": "blue"},
        {"ordered": "maybe"},
        {"secret": ""},
        {"secret": 7},
    ],
)
def test_bad_fields_are_validation_errors(api, fields):
    assert_problem(create(api, **fields), 400, "validation_error")
    assert Endpoint.objects.count() == 0


def test_metadata_past_the_kits_limits_is_422(api):
    assert_problem(create(api, metadata={f"k{i}": i for i in range(51)}), 422, "invalid_metadata")
    assert_problem(create(api, metadata={"k": "x" * 501}), 422, "invalid_metadata")
    assert len(audits("webhooks.endpoint.created", "failure")) == 2


# ------------------------------------------------------------------------------------------------ reads


def test_list_is_newest_first_and_pages_with_a_cursor(api):
    ids = [created(api, description=f"e{i}")["id"] for i in range(5)]

    first = api.get("endpoints", limit=2)
    assert first.status_code == 200
    page = first.json()
    assert [e["id"] for e in page["results"]] == ids[::-1][:2]
    assert page["previous"] is None
    assert page["next"]
    assert [e["id"] for e in api.all("endpoints", limit=2)] == ids[::-1]
    assert_problem(api.get("endpoints", cursor="garbage"), 400, "invalid_cursor")


def test_an_endpoint_shows_its_success_rate_of_the_last_24_hours(api):
    endpoint = created(api)
    other = created(api)
    now = timezone.now()
    for i, (status, error, age) in enumerate(
        [(200, "", 1), (200, "", 2), (200, "", 3), (500, "status", 4), (None, "timeout", 5), (200, "", 60 * 25)]
    ):
        Attempt.objects.create(
            delivery_id=i + 1,
            message_id=f"msg_{i}",
            endpoint_id=endpoint["id"],
            number=1,
            at=now - dt.timedelta(minutes=age),
            status_code=status,
            error=error,
        )
    Endpoint.objects.filter(id=endpoint["id"]).update(last_error="timeout", last_success_at=now, last_status=None)

    one = api.get(f"endpoints/{endpoint['id']}").json()
    listed = {e["id"]: e for e in api.get("endpoints").json()["results"]}

    assert one["stats"] == {"attempts": 5, "succeeded": 3, "success_rate": 0.6}
    assert one["last_error"] == "timeout"
    assert one["last_success_at"]
    assert listed[endpoint["id"]]["stats"] == one["stats"]
    assert listed[other["id"]]["stats"] == {"attempts": 0, "succeeded": 0, "success_rate": None}


def test_an_unknown_endpoint_is_404_on_every_route(api):
    missing = "ep_00000000000000000000000000"
    assert_problem(api.get(f"endpoints/{missing}"), 404, "endpoint_not_found")
    assert_problem(api.patch(f"endpoints/{missing}", {"description": "x"}), 404, "endpoint_not_found")
    assert_problem(api.delete(f"endpoints/{missing}"), 404, "endpoint_not_found")
    assert_problem(api.post(f"endpoints/{missing}/enable"), 404, "endpoint_not_found")
    assert_problem(api.post(f"endpoints/{missing}/disable", {}), 404, "endpoint_not_found")
    assert_problem(api.get(f"endpoints/{missing}/secret"), 404, "endpoint_not_found")
    assert_problem(api.post(f"endpoints/{missing}/secret/rotate", {}), 404, "endpoint_not_found")
    assert_problem(api.get(f"endpoints/{missing}/public-key"), 404, "endpoint_not_found")
    assert_problem(
        api.post(f"endpoints/{missing}/recover", {"since": "2026-01-01T00:00:00Z"}), 404, "endpoint_not_found"
    )
    # the refused writes are on record
    refused = [e for e in OutboxEvent.objects.filter(topic="audit") if e.payload["outcome"] == "failure"]
    assert {e.payload["action"] for e in refused} == {
        "webhooks.endpoint.updated",
        "webhooks.endpoint.deleted",
        "webhooks.endpoint.enabled",
        "webhooks.endpoint.disabled",
        "webhooks.endpoint.secret_read",
        "webhooks.endpoint.secret_rotated",
        "webhooks.recovery.requested",
    }
    assert all(e.payload["metadata"]["code"] == "endpoint_not_found" for e in refused)


# ------------------------------------------------------------------------------------------------ changes


def test_update_changes_what_is_given_and_audits_the_changes(api):
    endpoint = created(api, metadata={"a": "1"})

    response = api.patch(
        f"endpoints/{endpoint['id']}",
        {"event_types": ["ledger.*"], "max_in_flight": 3, "channels": ["acc_9"], "description": "ledger feed"},
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["event_types"], body["max_in_flight"], body["channels"]) == (["ledger.*"], 3, ["acc_9"])
    assert (body["description"], body["url"], body["metadata"]) == ("ledger feed", PUBLIC_URL, {"a": "1"})
    [event] = audits("webhooks.endpoint.updated")
    assert event["changes"]["event_types"] == [["payment.*"], ["ledger.*"]]
    assert event["changes"]["max_in_flight"] == [10, 3]
    assert "url" not in event["changes"]


def test_update_checks_a_new_url_and_patterns_again(api):
    endpoint = created(api)
    refused = api.patch(f"endpoints/{endpoint['id']}", {"url": "http://169.254.169.254/"})
    assert assert_problem(refused, 422, "endpoint_url_not_allowed")["reason"] == "blocked"
    assert_problem(api.patch(f"endpoints/{endpoint['id']}", {"event_types": ["nope.*"]}), 422, "unknown_event_type")
    assert_problem(api.patch(f"endpoints/{endpoint['id']}", {"enabled": False}), 400, "validation_error")
    assert Endpoint.objects.get(id=endpoint["id"]).url == PUBLIC_URL
    assert [e["metadata"]["code"] for e in audits("webhooks.endpoint.updated", "failure")] == [
        "endpoint_url_not_allowed",
        "unknown_event_type",
        "validation_error",
    ]


def test_disable_and_enable(api):
    endpoint = created(api)
    Endpoint.objects.filter(id=endpoint["id"]).update(first_failure_at=timezone.now())

    disabled = api.post(f"endpoints/{endpoint['id']}/disable", {"reason": "merchant maintenance"})
    assert disabled.status_code == 200, disabled.content
    assert (disabled.json()["enabled"], disabled.json()["disabled_reason"]) == (False, "merchant maintenance")
    assert disabled.json()["disabled_at"]

    enabled = api.post(f"endpoints/{endpoint['id']}/enable")
    assert enabled.status_code == 200
    assert (enabled.json()["enabled"], enabled.json()["disabled_reason"], enabled.json()["disabled_at"]) == (
        True,
        "",
        None,
    )
    assert enabled.json()["first_failure_at"] is None  # the failure clock starts afresh
    # enabling an enabled endpoint changes nothing and records nothing
    assert api.post(f"endpoints/{endpoint['id']}/enable").status_code == 200
    assert [e["metadata"].get("reason") for e in audits("webhooks.endpoint.disabled")] == ["merchant maintenance"]
    assert len(audits("webhooks.endpoint.enabled")) == 1


def test_disable_without_a_reason_says_manual_and_a_bad_reason_is_refused(api):
    endpoint = created(api)
    assert api.post(f"endpoints/{endpoint['id']}/disable").json()["disabled_reason"] == "manual"
    assert_problem(api.post(f"endpoints/{endpoint['id']}/disable", {"reason": "x" * 201}), 400, "validation_error")
    assert_problem(api.post(f"endpoints/{endpoint['id']}/disable", {"why": "x"}), 400, "validation_error")


def test_delete(api):
    endpoint = created(api)

    response = api.delete(f"endpoints/{endpoint['id']}")

    assert response.status_code == 204
    assert not Endpoint.objects.filter(id=endpoint["id"]).exists()
    assert_problem(api.get(f"endpoints/{endpoint['id']}"), 404, "endpoint_not_found")
    [event] = audits("webhooks.endpoint.deleted")
    assert event["object"]["id"] == endpoint["id"]
    assert event["metadata"]["url"] == PUBLIC_URL


# ------------------------------------------------------------------------------------------------ secrets


def _signed(secret: str, msg_id: str = "msg_test", body: bytes = b'{"type":"payment.settled"}') -> dict[str, str]:
    timestamp = int(timezone.now().timestamp())
    return signing.delivery_headers(msg_id, timestamp, signing.sign_v1(secret, msg_id, timestamp, body))


def test_the_secret_read_is_audited_and_verifies_what_the_service_signs_with_standardwebhooks(api):
    endpoint = created(api)
    stored = secrets.decrypt(Endpoint.objects.get(id=endpoint["id"]).secret)

    response = api.get(f"endpoints/{endpoint['id']}/secret")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body == {
        "endpoint": endpoint["id"],
        "secret": stored,
        "previous_secret": None,
        "previous_secret_expires_at": None,
    }
    # an independent implementation verifies a signature made with the stored secret under the one shown
    payload = b'{"type":"payment.settled","timestamp":"2026-12-04T09:31:00Z","data":{"id":"pay_1"}}'
    Webhook(body["secret"]).verify(payload, _signed(stored, body=payload))
    with pytest.raises(WebhookVerificationError):
        Webhook(secrets.secret_new()).verify(payload, _signed(stored, body=payload))
    [event] = audits("webhooks.endpoint.secret_read")
    assert event["object"]["id"] == endpoint["id"]
    assert event["actor"]["id"] == "cli_test"
    assert stored not in json.dumps(event)


def test_a_callers_secret_round_trips(api):
    mine = "whsec_" + base64.b64encode(b"0123456789abcdef01234567").decode()
    endpoint = created(api, secret=mine)
    assert api.get(f"endpoints/{endpoint['id']}/secret").json()["secret"] == mine


def test_rotation_keeps_the_old_secret_signing_during_the_overlap(api):
    endpoint = created(api)
    old = api.get(f"endpoints/{endpoint['id']}/secret").json()["secret"]

    rotated = api.post(f"endpoints/{endpoint['id']}/secret/rotate", {"overlap_seconds": 3600})

    assert rotated.status_code == 200, rotated.content
    assert "whsec_" not in rotated.content.decode()
    expires = dt.datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert dt.timedelta(minutes=59) < expires - timezone.now() <= dt.timedelta(hours=1)
    shown = api.get(f"endpoints/{endpoint['id']}/secret").json()
    assert shown["previous_secret"] == old
    assert shown["secret"] != old
    # a delivery now carries both signatures, and a receiver holding either secret verifies it
    stored = Endpoint.objects.get(id=endpoint["id"])
    payload = b'{"type":"payment.settled","timestamp":"2026-12-04T09:31:00Z","data":{}}'
    timestamp = int(timezone.now().timestamp())
    header = signing.signature_header(
        secret=secrets.decrypt(stored.secret),
        previous_secret=secrets.decrypt(stored.previous_secret),
        previous_secret_expires_at=stored.previous_secret_expires_at,
        msg_id="msg_x",
        timestamp=timestamp,
        body=payload,
    )
    assert len(header.split(" ")) == 2
    headers = signing.delivery_headers("msg_x", timestamp, header)
    Webhook(old).verify(payload, headers)
    Webhook(shown["secret"]).verify(payload, headers)
    [event] = audits("webhooks.endpoint.secret_rotated")
    assert event["metadata"]["overlap_seconds"] == 3600
    assert old not in json.dumps(event)
    assert shown["secret"] not in json.dumps(event)


def test_rotation_defaults_to_24_hours_takes_a_callers_secret_and_zero_overlap_drops_the_old_one(api):
    endpoint = created(api)
    default = api.post(f"endpoints/{endpoint['id']}/secret/rotate").json()
    expires = dt.datetime.fromisoformat(default["previous_secret_expires_at"])
    assert dt.timedelta(hours=23, minutes=59) < expires - timezone.now() <= dt.timedelta(hours=24)

    mine = "whsec_" + base64.b64encode(b"k" * 40).decode()
    now = api.post(f"endpoints/{endpoint['id']}/secret/rotate", {"secret": mine, "overlap_seconds": 0}).json()
    assert now["previous_secret_expires_at"] is None
    assert api.get(f"endpoints/{endpoint['id']}/secret").json() == {
        "endpoint": endpoint["id"],
        "secret": mine,
        "previous_secret": None,
        "previous_secret_expires_at": None,
    }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"secret": "whsec_short"}, 422, "invalid_secret"),
        ({"secret": "plain"}, 422, "invalid_secret"),
        ({"overlap_seconds": -1}, 400, "validation_error"),
        ({"overlap_seconds": "soon"}, 400, "validation_error"),
        ({"other": 1}, 400, "validation_error"),
    ],
)
def test_a_bad_rotation_is_refused_and_audited(api, body, status, code):
    endpoint = created(api)
    before = Endpoint.objects.get(id=endpoint["id"]).secret
    assert_problem(api.post(f"endpoints/{endpoint['id']}/secret/rotate", body), status, code)
    assert Endpoint.objects.get(id=endpoint["id"]).secret == before
    assert audits("webhooks.endpoint.secret_rotated", "failure")[0]["metadata"]["code"] == code


def test_v1a_publishes_an_ed25519_public_key_that_verifies_its_signatures(api):
    plain = created(api)
    assert_problem(api.get(f"endpoints/{plain['id']}/public-key"), 404, "public_key_not_found")

    endpoint = created(api, v1a=True)
    response = api.get(f"endpoints/{endpoint['id']}/public-key")

    assert response.status_code == 200, response.content
    key = response.json()["public_key"]
    assert key.startswith("whpk_")
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key[5:]))
    private = secrets.decrypt(Endpoint.objects.get(id=endpoint["id"]).signing_key)
    signature = signing.sign_v1a(private, "msg_1", 1733300000, b"{}")
    public.verify(base64.b64decode(signature.split(",", 1)[1]), signing.signed_content("msg_1", 1733300000, b"{}"))
    # turned on later: a key is made; off: it is dropped
    assert api.patch(f"endpoints/{plain['id']}", {"v1a": True}).json()["v1a"] is True
    assert api.get(f"endpoints/{plain['id']}/public-key").json()["public_key"].startswith("whpk_")
    assert api.patch(f"endpoints/{plain['id']}", {"v1a": False}).status_code == 200
    assert Endpoint.objects.get(id=plain["id"]).signing_key == ""
    assert_problem(api.get(f"endpoints/{plain['id']}/public-key"), 404, "public_key_not_found")


# ------------------------------------------------------------------------------------------------ scopes


def test_a_read_only_token_reads_but_cannot_write_or_see_secrets(api):
    endpoint = created(api)
    reader = api.as_client("cli_reader", scope="webhooks:read")

    assert reader.get("endpoints").status_code == 200
    assert reader.get(f"endpoints/{endpoint['id']}").status_code == 200
    assert_problem(reader.get(f"endpoints/{endpoint['id']}/secret"), 403, "insufficient_scope")
    assert_problem(create(reader), 403, "insufficient_scope")
    assert_problem(reader.patch(f"endpoints/{endpoint['id']}", {"description": "x"}), 403, "insufficient_scope")
    assert_problem(reader.delete(f"endpoints/{endpoint['id']}"), 403, "insufficient_scope")
    assert_problem(reader.post(f"endpoints/{endpoint['id']}/disable", {}), 403, "insufficient_scope")
    assert_problem(reader.post(f"endpoints/{endpoint['id']}/secret/rotate", {}), 403, "insufficient_scope")
    assert Endpoint.objects.get(id=endpoint["id"]).enabled
    assert not audits("webhooks.endpoint.secret_read")


def test_a_write_only_token_cannot_list(api):
    writer = api.as_client("cli_writer", scope="webhooks:write")
    assert_problem(writer.get("endpoints"), 403, "insufficient_scope")
    assert created(writer)["id"]


def test_another_services_token_and_no_token_are_refused(api, signing_key):
    other = {"HTTP_AUTHORIZATION": f"Bearer {signing_key.mint(aud='payments', scope='webhooks:read')}"}
    assert_problem(api.client.get("/api/v1/endpoints", **other), 403, "invalid_audience")
    assert_problem(api.client.get("/api/v1/endpoints"), 401, "not_authenticated")
