"""The machine-client admin: the secret is shown once, on the page that created or rotated it."""

from __future__ import annotations

import html
import re

import pytest
from django.utils import timezone

from portal.identity.models import MachineClient
from portal.identity.services import secret_hash
from tests.portal.factories import machine_client, superuser, user_with_role

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/identity/machineclient/add/"
CHANGELIST_URL = "/admin/identity/machineclient/"
SECRET = re.compile(r'<code id="client-secret">([^<]+)</code>')


def _change_url(pk: str) -> str:
    return f"/admin/identity/machineclient/{pk}/change/"


def _cache_directives(response) -> set[str]:
    return {d.strip() for d in response["Cache-Control"].split(",")}


def _shown_secret(response) -> str:
    match = SECRET.search(response.content.decode())
    assert match, response.content.decode()[:3000]
    return html.unescape(match.group(1))


@pytest.fixture
def admin_client(client):
    client.force_login(superuser())
    return client


def test_add_page_renders(admin_client):
    response = admin_client.get(ADD_URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="allowed_audiences"' in page
    assert 'type="checkbox"' in page
    assert 'value="ledger:read"' in page


def test_adding_a_client_shows_its_secret_once(admin_client, request_token):
    # when the add form is submitted
    response = admin_client.post(
        ADD_URL,
        {
            "name": "billing-export",
            "description": "nightly export",
            "allowed_audiences": ["ledger", "payments"],
            "allowed_scopes": ["ledger:read", "payments:read"],
            "token_ttl_seconds": "600",
            "_save": "Save",
        },
    )

    # then a non-cacheable page (not a redirect) shows the new secret
    assert response.status_code == 200, response.content.decode()[:3000]
    assert "no-store" in _cache_directives(response)
    secret = _shown_secret(response)
    client = MachineClient.objects.get(name="billing-export")
    assert f'<code id="client-id">{client.id}</code>' in response.content.decode()
    assert client.allowed_audiences == ["ledger", "payments"]
    assert client.allowed_scopes == ["ledger:read", "payments:read"]
    assert client.token_ttl_seconds == 600
    assert client.secret_hash == secret_hash(secret)
    assert client.created_by is not None
    assert client.created_by.is_superuser

    # and the secret works at the token endpoint
    token = request_token(
        {"grant_type": "client_credentials", "client_id": client.id, "client_secret": secret, "audience": "payments"}
    )
    assert token.status_code == 200, token.content
    assert token.json()["scope"] == "payments:read"

    # and reloading the client's change page does not show it again
    change = admin_client.get(_change_url(client.id))
    assert change.status_code == 200
    assert secret not in change.content.decode()
    assert 'id="client-secret"' not in change.content.decode()


def test_add_form_refuses_a_scope_outside_the_chosen_audiences(admin_client):
    response = admin_client.post(
        ADD_URL,
        {
            "name": "misfit",
            "allowed_audiences": ["ledger"],
            "allowed_scopes": ["payments:write"],
            "token_ttl_seconds": "900",
        },
    )

    # the form is shown again with the error, and no client (or secret) exists
    assert response.status_code == 200
    assert "Scope(s) not offered by the allowed audiences: payments:write." in html.unescape(response.content.decode())
    assert 'id="client-secret"' not in response.content.decode()
    assert not MachineClient.objects.filter(name="misfit").exists()


def test_rotate_secret_action_shows_the_new_secret(admin_client, request_token):
    # given a client whose secret works
    machine = machine_client()

    # when the rotate action runs on it
    response = admin_client.post(
        CHANGELIST_URL, {"action": "rotate_secret", "_selected_action": [machine.id], "index": "0"}
    )

    # then the new secret is shown once; it works, and the old one only for the grace period
    assert response.status_code == 200, response.content.decode()[:3000]
    assert "no-store" in _cache_directives(response)
    assert "Secret rotated" in response.content.decode()
    new_secret = _shown_secret(response)
    assert new_secret != machine.secret
    assert request_token({**machine.token_request("ledger"), "client_secret": new_secret}).status_code == 200
    assert request_token(machine.token_request("ledger")).status_code == 200
    MachineClient.objects.filter(pk=machine.id).update(previous_secret_valid_until=timezone.now())
    assert request_token(machine.token_request("ledger")).status_code == 401


def test_rotate_secret_action_refuses_more_than_one_client(admin_client):
    first, second = machine_client(), machine_client()

    response = admin_client.post(
        CHANGELIST_URL,
        {"action": "rotate_secret", "_selected_action": [first.id, second.id], "index": "0"},
        follow=True,
    )

    assert response.status_code == 200
    assert "Rotate one client at a time" in response.content.decode()
    assert 'id="client-secret"' not in response.content.decode()
    assert MachineClient.objects.get(pk=first.id).secret_hash == secret_hash(first.secret)
    assert MachineClient.objects.get(pk=second.id).secret_hash == secret_hash(second.secret)


def test_revoke_action_revokes_the_selected_clients(admin_client, request_token):
    first, second = machine_client(), machine_client()

    response = admin_client.post(
        CHANGELIST_URL, {"action": "revoke", "_selected_action": [first.id, second.id], "index": "0"}, follow=True
    )

    assert response.status_code == 200
    assert "Revoked 2 client(s)." in response.content.decode()
    assert not MachineClient.objects.filter(pk__in=[first.id, second.id], is_active=True).exists()
    assert request_token(first.token_request("ledger")).status_code == 401


def test_machine_clients_cannot_be_deleted_in_the_admin(admin_client):
    # given a client
    machine = machine_client()

    # then no delete action is offered and the delete view is forbidden even to a superuser
    changelist = admin_client.get(CHANGELIST_URL)
    assert changelist.status_code == 200
    assert 'value="delete_selected"' not in changelist.content.decode()
    assert admin_client.get(f"/admin/identity/machineclient/{machine.id}/delete/").status_code == 403
    assert admin_client.post(f"/admin/identity/machineclient/{machine.id}/delete/", {"post": "yes"}).status_code == 403
    assert MachineClient.objects.filter(pk=machine.id).exists()


def test_viewer_sees_the_changelist_but_not_the_add_page(client):
    # given a staff user with the viewer role and an existing client
    machine = machine_client(name="visible-client")
    client.force_login(user_with_role("viewer"))

    # then they can list and open clients, but not add one or run actions
    changelist = client.get(CHANGELIST_URL)
    assert changelist.status_code == 200
    assert "visible-client" in changelist.content.decode()
    assert 'value="rotate_secret"' not in changelist.content.decode()
    assert client.get(_change_url(machine.id)).status_code == 200
    assert client.get(ADD_URL).status_code == 403
    rotate = client.post(CHANGELIST_URL, {"action": "rotate_secret", "_selected_action": [machine.id], "index": "0"})
    assert 'id="client-secret"' not in rotate.content.decode()
    assert MachineClient.objects.get(pk=machine.id).secret_hash == secret_hash(machine.secret)
