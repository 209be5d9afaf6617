"""The portal admin's logins are throttled like every service's (tests/login_throttle.py); operators unlock.

The operator and admin roles may unlock (``axes.delete_accessattempt``, granted by identity's migration 0004);
the auditor may only look at the attempts, the viewer not even that. A refused attempt is one failed login in the
audit trail, not two.
"""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Group
from django.test import Client

from tests.login_throttle import (  # noqa: F401  (pytest collects the imported tests and uses the fixtures)
    ATTEMPTS,
    PASSWORD,
    UNLOCK,
    WRONG,
    _relay_off,
    alice,
    assert_locked_page,
    events,
    login,
    test_a_lockout_is_audited_once_not_for_every_refused_attempt,
    test_a_refused_login_asking_for_json_gets_problem_json_429,
    test_a_successful_login_forgives_only_that_usernames_failures_from_that_address,
    test_an_unlock_by_username_lets_the_right_password_in_at_once_and_is_audited,
    test_an_unlock_of_an_address_from_the_attempts_list_action,
    test_behind_a_proxy_a_forged_forwarded_for_does_not_escape_the_address_lockout,
    test_settings_wire_axes_into_the_admin,
    test_the_client_address_behind_a_given_number_of_proxies,
    test_the_failure_limit_locks_a_username_out_across_addresses_and_the_right_password_is_refused,
    test_the_failure_limit_locks_an_address_out_across_usernames,
    test_the_lockout_ends_when_the_cool_off_has_passed_since_the_last_failure,
    test_the_unlock_form_takes_exactly_one_username_or_one_address,
    test_unlocking_needs_the_permission_to_clear_attempts,
    test_without_a_cool_off_only_an_unlock_ends_the_lockout,
    unlocker,
)
from tests.portal.factories import user_with_role

pytestmark = pytest.mark.django_db


def _role_perms(role: str) -> set[str]:
    group = Group.objects.get(name=role)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def test_operators_and_admins_may_unlock_auditors_only_look_viewers_see_nothing():
    assert "axes.delete_accessattempt" in _role_perms("operator")
    assert "axes.delete_accessattempt" in _role_perms("admin")
    assert "axes.delete_accessattempt" not in _role_perms("auditor")
    assert "axes.view_accessattempt" in _role_perms("auditor")
    assert not {p for p in _role_perms("viewer") if p.startswith("axes.")}


@pytest.fixture
def locked_alice(client, settings, request) -> None:
    request.getfixturevalue("alice")
    for i in range(settings.AXES_FAILURE_LIMIT):
        login(client, "alice", WRONG, f"10.20.0.{i + 1}")
    assert_locked_page(login(client, "alice", PASSWORD, "10.20.1.1"))


@pytest.mark.usefixtures("locked_alice")
def test_an_operator_unlocks_a_username_from_the_admin(client):
    # given an operator's admin session
    operator = user_with_role("operator", username="opal")
    session = Client()
    session.force_login(operator)

    # when they unlock alice from the unlock page
    assert UNLOCK in session.get(ATTEMPTS).content.decode()
    assert session.post(UNLOCK, {"username": "alice"}).status_code == 302

    # then alice logs in, and the unlock names the operator
    assert login(client, "alice", PASSWORD, "10.20.1.1").status_code == 302
    (event,) = events("auth.login.unlocked")
    assert event["actor"]["display"] == "opal"
    assert event["object"] == {"type": "username", "id": "alice"}


@pytest.mark.usefixtures("locked_alice")
@pytest.mark.parametrize(("role", "sees_list"), [("viewer", False), ("auditor", True), (None, False)])
def test_viewers_and_auditors_may_not_unlock(client, role, sees_list):
    session = Client()
    session.force_login(user_with_role(role))

    assert (session.get(ATTEMPTS).status_code == 200) is sees_list
    assert session.get(UNLOCK).status_code == 403
    assert session.post(UNLOCK, {"username": "alice"}).status_code == 403
    pks = list(AccessAttempt.objects.values_list("pk", flat=True))
    session.post(ATTEMPTS, {"action": "unlock_usernames", "_selected_action": pks})

    # alice stays locked out, and no unlock was recorded
    assert AccessAttempt.objects.count() == len(pks)
    assert_locked_page(login(client, "alice", PASSWORD, "10.20.1.2"))
    assert not events("auth.login.unlocked")


@pytest.mark.usefixtures("alice")
def test_a_refused_attempt_is_one_failed_login_event_not_two(client, settings):
    limit = settings.AXES_FAILURE_LIMIT
    # when alice's password fails up to the limit, then twice more while she is locked out (once the right one)
    for password in [WRONG] * limit + [PASSWORD, WRONG]:
        login(client, "alice", password, "10.21.0.1")

    # then each attempt is one failed login, and the lockout is recorded apart (username and address)
    assert len(events("auth.login.failed")) == limit + 2
    assert len(events("auth.login.locked_out")) == 2
    assert not events("auth.login.succeeded")
