"""Throttled admin logins, the same in every Django process: imported by each suite (run under its settings).

django-axes with the kit's configuration (services/kit/conf.py, services/kit/logins.py, services/kit/admin.py):
lockout after ``AXES_FAILURE_LIMIT`` failures of one username (from any address) or from one address (for any
username); while locked out the right password is refused with a 429 page (or problem+json); each lockout is
audited once; the cool-off ends it; a user allowed to unlock (``axes.delete_accessattempt``) can end it at once,
audited. Logins go through the admin's real login form (the test client skips only the CSRF check).
"""

from __future__ import annotations

import datetime as dt

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, RequestFactory

from services.kit.logins import client_ip_address
from services.kit.models import OutboxEvent

PASSWORD = "a long enough password"
WRONG = "not the password at all"
LOGIN = "/admin/login/"
ATTEMPTS = "/admin/axes/accessattempt/"
UNLOCK = "/admin/axes/accessattempt/unlock/"


@pytest.fixture(autouse=True)
def _relay_off(settings):
    settings.ATRIUM_OUTBOX_RELAY = "off"


@pytest.fixture
def alice():
    """The staff user whose logins are attacked."""
    return get_user_model().objects.create_superuser("alice", "alice@example.test", PASSWORD)


@pytest.fixture
def unlocker() -> Client:
    """A superuser's admin session (from an address of its own), allowed to unlock."""
    ops = get_user_model().objects.create_superuser("ops", "ops@example.test", PASSWORD)
    client = Client(REMOTE_ADDR="192.0.2.200")
    client.force_login(ops)
    return client


def login(client: Client, username: str, password: str, address: str = "127.0.0.1", **extra: str):
    """POST the admin's login form from ``address``."""
    return client.post(
        LOGIN, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=address, **extra
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def events(action: str) -> list[dict]:
    rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
    return [r.payload for r in rows if r.payload["action"] == action]


def assert_locked_page(response) -> None:
    assert response.status_code == 429, response.content.decode()[:2000]
    assert response["Content-Type"].startswith("text/html")
    assert "Too many failed logins" in response.content.decode()


@pytest.mark.django_db
def test_the_failure_limit_locks_a_username_out_across_addresses_and_the_right_password_is_refused(
    client, alice, settings
):
    limit = settings.AXES_FAILURE_LIMIT
    # given failures for alice, each from another address, one short of the limit
    for i in range(limit - 1):
        assert login(client, "alice", WRONG, f"10.0.0.{i + 1}").status_code == 200  # the form again

    # when one more fails, from yet another address
    response = login(client, "alice", WRONG, "10.0.0.99")

    # then alice is locked out: the page says so (not a 500, not the form), even with the right password
    assert_locked_page(response)
    assert response["Retry-After"] == str(900)
    assert_locked_page(login(client, "alice", PASSWORD, "10.0.1.1"))
    assert not logged_in(client)
    assert client.get("/admin/").status_code == 302  # to the login page
    # and the addresses, each with one failure, are not: another user logs in from one of them
    get_user_model().objects.create_superuser("bob", "bob@example.test", PASSWORD)
    assert login(Client(), "bob", PASSWORD, "10.0.0.1").status_code == 302


@pytest.mark.django_db
def test_the_failure_limit_locks_an_address_out_across_usernames(client, alice, settings):
    limit = settings.AXES_FAILURE_LIMIT
    # given one address trying a different username each time (known or not), up to the limit
    for i in range(limit - 1):
        assert login(client, f"guess{i}", WRONG, "10.1.0.1").status_code == 200
    assert_locked_page(login(client, "root", WRONG, "10.1.0.1"))

    # then nobody logs in from it, even alice with her password, who has never failed
    assert_locked_page(login(client, "alice", PASSWORD, "10.1.0.1"))
    assert not logged_in(client)
    # and from another address she does (her username is not locked)
    assert login(Client(), "alice", PASSWORD, "10.1.0.2").status_code == 302


@pytest.mark.django_db
def test_a_refused_login_asking_for_json_gets_problem_json_429(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", WRONG)

    # when a program posts the right password, asking for JSON (or as an XMLHttpRequest)
    for headers in ({"HTTP_ACCEPT": "application/json"}, {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}):
        response = login(client, "alice", PASSWORD, **headers)

        # then it gets a problem document with a stable code and when to come back
        assert response.status_code == 429
        assert response["Content-Type"] == "application/problem+json"
        body = response.json()
        assert body["code"] == "login_locked_out"
        assert body["status"] == 429
        assert body["request_id"]
        assert response["Retry-After"] == "900"
    assert not logged_in(client)


@pytest.mark.django_db
def test_a_lockout_is_audited_once_not_for_every_refused_attempt(client, alice, settings):
    limit = settings.AXES_FAILURE_LIMIT
    OutboxEvent.objects.all().delete()

    # when one address fails alice's password up to the limit, then keeps trying (wrong and right)
    for _ in range(limit):
        login(client, "alice", WRONG, "10.2.0.1", HTTP_USER_AGENT="brute/1.0")
    for password in (WRONG, PASSWORD, WRONG):
        assert_locked_page(login(client, "alice", password, "10.2.0.1"))

    # then two lockouts were recorded, when the limit was reached: the username's and the address's
    locked = events("auth.login.locked_out")
    assert sorted((e["object"]["type"], e["object"]["id"]) for e in locked) == [
        ("address", "10.2.0.1"),
        ("username", "alice"),
    ]
    for event in locked:
        assert event["outcome"] == "failure"
        assert event["actor"]["type"] == "system"
        assert event["source_ip"] == "10.2.0.1"
        assert event["user_agent"] == "brute/1.0"
        assert event["request_id"]
        assert event["metadata"]["username"] == "alice"
        assert event["metadata"]["ip_address"] == "10.2.0.1"
        assert event["metadata"]["failure_limit"] == limit
        assert event["metadata"]["cool_off_seconds"] == 900
        assert PASSWORD not in str(event)
        assert WRONG not in str(event)

    # and a later lockout of another username from another address is its own pair of events
    for _ in range(limit):
        login(client, "mallory", WRONG, "10.2.0.2")
    assert len(events("auth.login.locked_out")) == 4


def _age(seconds: float) -> None:
    """Make every recorded failure ``seconds`` older (as if that much time had passed)."""
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= dt.timedelta(seconds=seconds)
        attempt.save(update_fields=["attempt_time"])


@pytest.mark.django_db
def test_the_lockout_ends_when_the_cool_off_has_passed_since_the_last_failure(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", WRONG, "10.3.0.1")

    # when most of the cool-off has passed, alice is still refused (and the refused attempt extends the lockout)
    _age(900 - 60)
    assert_locked_page(login(client, "alice", PASSWORD, "10.3.0.1"))

    # and once a whole cool-off has passed since the last failure, her password works again
    _age(900 + 1)
    assert login(client, "alice", PASSWORD, "10.3.0.1").status_code == 302
    assert logged_in(client)


@pytest.mark.django_db
def test_without_a_cool_off_only_an_unlock_ends_the_lockout(client, alice, unlocker, settings):
    settings.AXES_COOLOFF_TIME = None
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", WRONG, "10.4.0.1")

    # when a day has passed, alice is still locked out, and the page says an operator must unlock her
    _age(86_400)
    response = login(client, "alice", PASSWORD, "10.4.0.2")
    assert_locked_page(response)
    assert "operator must unlock" in response.content.decode()
    assert "Retry-After" not in response

    # and after an unlock she logs in
    assert unlocker.post(UNLOCK, {"username": "alice"}).status_code == 302
    assert login(client, "alice", PASSWORD, "10.4.0.2").status_code == 302


@pytest.mark.django_db
def test_a_successful_login_forgives_only_that_usernames_failures_from_that_address(client, alice, settings):
    # given alice's own typos from her address, others' failures on her username elsewhere, and her address's
    # failures for another username
    login(client, "alice", WRONG, "10.5.0.1")
    login(client, "alice", WRONG, "10.5.0.1")
    login(client, "alice", WRONG, "10.5.0.9")
    login(client, "bob", WRONG, "10.5.0.1")

    # when she logs in from her address
    assert login(client, "alice", PASSWORD, "10.5.0.1").status_code == 302

    # then only her failures from there are forgotten
    left = sorted(AccessAttempt.objects.values_list("username", "ip_address", "failures_since_start"))
    assert left == [("alice", "10.5.0.9", 1), ("bob", "10.5.0.1", 1)]


@pytest.mark.parametrize(
    ("proxies", "forwarded", "remote", "expected"),
    [
        (0, "", "10.0.0.1", "10.0.0.1"),  # no proxy: the peer
        (0, "203.0.113.7", "10.0.0.1", "10.0.0.1"),  # no proxy configured: the header is the client's word
        (1, "203.0.113.7", "10.0.0.1", "203.0.113.7"),  # one proxy: the address it saw
        (1, "198.51.100.1, 203.0.113.7", "10.0.0.1", "203.0.113.7"),  # the client's own entry is ignored
        (2, "198.51.100.1, 203.0.113.7, 10.9.9.9", "10.0.0.1", "203.0.113.7"),  # two proxies: two hops in
        (2, "203.0.113.7", "10.0.0.1", "10.0.0.1"),  # fewer entries than proxies: not through them
        (1, "2001:DB8:0:0::0001", "10.0.0.1", "2001:db8::1"),  # one address, one spelling
        (1, " 203.0.113.7 ", "10.0.0.1", "203.0.113.7"),
        (1, "not-an-address", "10.0.0.1", "10.0.0.1"),  # garbage never reaches the database
        (1, "203.0.113.7:443", "10.0.0.1", "10.0.0.1"),
        (0, "", "::ffff:10.0.0.1", "::ffff:a00:1"),
        (0, "", "", None),
    ],
)
def test_the_client_address_behind_a_given_number_of_proxies(settings, proxies, forwarded, remote, expected):
    settings.ATRIUM_PROXY_COUNT = proxies
    request = RequestFactory().post(LOGIN, REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)

    assert client_ip_address(request) == expected


@pytest.mark.django_db
def test_behind_a_proxy_a_forged_forwarded_for_does_not_escape_the_address_lockout(client, alice, settings):
    settings.ATRIUM_PROXY_COUNT = 1
    limit = settings.AXES_FAILURE_LIMIT
    # given one client behind the proxy forging a new X-Forwarded-For for each failure (the proxy appends the real
    # one), each for another username so that only the address can be counted
    for i in range(limit):
        forwarded = f"198.51.100.{i + 1}, 203.0.113.50"
        login(client, f"guess{i}", WRONG, "10.0.0.254", HTTP_X_FORWARDED_FOR=forwarded)

    # then that client is locked out, whatever it claims, and another client behind the same proxy is not
    refused = login(client, "alice", PASSWORD, "10.0.0.254", HTTP_X_FORWARDED_FOR="192.0.2.1, 203.0.113.50")
    assert_locked_page(refused)
    other = login(Client(), "alice", PASSWORD, "10.0.0.254", HTTP_X_FORWARDED_FOR="203.0.113.51")
    assert other.status_code == 302
    assert AccessAttempt.objects.filter(ip_address="203.0.113.50").count() == limit + 1


@pytest.mark.django_db
def test_an_unlock_by_username_lets_the_right_password_in_at_once_and_is_audited(client, alice, unlocker, settings):
    for i in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", WRONG, f"10.6.0.{i + 1}")
    assert_locked_page(login(client, "alice", PASSWORD, "10.6.1.1"))
    OutboxEvent.objects.all().delete()

    # when an operator opens the unlock page from the attempts list and unlocks alice
    listing = unlocker.get(ATTEMPTS)
    assert listing.status_code == 200
    assert UNLOCK in listing.content.decode()
    assert 'class="field-locked_out">username<' in listing.content.decode()  # each address failed once
    assert unlocker.get(UNLOCK, {"username": "alice"}).status_code == 200
    response = unlocker.post(UNLOCK, {"username": "alice", "ip_address": ""})
    assert response.status_code == 302
    assert response["Location"] == ATTEMPTS

    # then her right password works at once
    assert login(client, "alice", PASSWORD, "10.6.1.1").status_code == 302
    # and the unlock is audited, naming who did it
    (event,) = events("auth.login.unlocked")
    assert event["outcome"] == "success"
    assert event["actor"]["display"] == "ops"
    assert event["object"] == {"type": "username", "id": "alice"}
    assert event["metadata"]["attempts_cleared"] == settings.AXES_FAILURE_LIMIT + 1
    assert event["source_ip"] == "192.0.2.200"


@pytest.mark.django_db
def test_an_unlock_of_an_address_from_the_attempts_list_action(client, alice, unlocker, settings):
    for i in range(settings.AXES_FAILURE_LIMIT):
        login(client, f"guess{i}", WRONG, "10.7.0.1")
    assert_locked_page(login(client, "alice", PASSWORD, "10.7.0.1"))
    assert 'class="field-locked_out">address<' in unlocker.get(ATTEMPTS).content.decode()
    OutboxEvent.objects.all().delete()

    # when the operator selects one of that address's attempts and runs "unlock the addresses"
    one = AccessAttempt.objects.filter(ip_address="10.7.0.1").first()
    response = unlocker.post(ATTEMPTS, {"action": "unlock_addresses", "_selected_action": [one.pk]})
    assert response.status_code == 302

    # then every failure from the address is cleared and alice logs in from it
    assert not AccessAttempt.objects.filter(ip_address="10.7.0.1").exists()
    assert login(client, "alice", PASSWORD, "10.7.0.1").status_code == 302
    (event,) = events("auth.login.unlocked")
    assert event["object"] == {"type": "address", "id": "10.7.0.1"}
    assert event["actor"]["display"] == "ops"


@pytest.mark.django_db
def test_the_unlock_form_takes_exactly_one_username_or_one_address(alice, unlocker, client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", WRONG, "10.8.0.1")
    OutboxEvent.objects.all().delete()

    # when the form is sent empty, with both, or with something that is not an address
    for body in ({}, {"username": "alice", "ip_address": "10.8.0.1"}, {"ip_address": "10.8.0.256"}):
        response = unlocker.post(UNLOCK, body)

        # then it comes back with an error, and nothing is unlocked or audited
        assert response.status_code == 200
        assert b"errornote" in response.content or b"errorlist" in response.content
    assert AccessAttempt.objects.count() == 1
    assert not events("auth.login.unlocked")


@pytest.mark.django_db
def test_unlocking_needs_the_permission_to_clear_attempts(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", WRONG, "10.9.0.1")
    # given a staff user who may only look at the attempts
    looker = get_user_model().objects.create_user("looker", password=PASSWORD, is_staff=True)
    looker.user_permissions.add(Permission.objects.get(content_type__app_label="axes", codename="view_accessattempt"))
    staff = Client()
    staff.force_login(looker)

    # then the list shows, without the unlock link; the page and the actions are refused
    listing = staff.get(ATTEMPTS)
    assert listing.status_code == 200
    assert UNLOCK not in listing.content.decode()
    assert staff.get(UNLOCK).status_code == 403
    assert staff.post(UNLOCK, {"username": "alice"}).status_code == 403
    one = AccessAttempt.objects.get()
    staff.post(ATTEMPTS, {"action": "unlock_usernames", "_selected_action": [one.pk]})
    assert AccessAttempt.objects.count() == 1
    assert not events("auth.login.unlocked")
    assert_locked_page(login(client, "alice", PASSWORD, "10.9.0.2"))
    # and nobody deletes or edits attempt records by hand
    assert staff.post(f"{ATTEMPTS}{one.pk}/delete/", {"post": "yes"}).status_code == 403
    assert staff.post(f"{ATTEMPTS}{one.pk}/change/", {"failures_since_start": 0}).status_code == 403
    assert AccessAttempt.objects.get(pk=one.pk).failures_since_start == settings.AXES_FAILURE_LIMIT


def test_settings_wire_axes_into_the_admin(settings):
    assert "axes" in settings.INSTALLED_APPS
    assert settings.MIDDLEWARE[-1] == "axes.middleware.AxesMiddleware"
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"
    assert settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]
    assert settings.AXES_COOLOFF_TIME == dt.timedelta(seconds=900)
