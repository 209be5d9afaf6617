"""Identity services and the database rules behind them."""

from __future__ import annotations

import hashlib

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from portal.identity import services
from portal.identity.errors import InvalidClientConfiguration
from portal.identity.models import MachineClient
from tests.portal.factories import machine_client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("audiences", "scopes", "message"),
    [
        pytest.param(["warehouse"], [], "Unknown audience(s): warehouse.", id="unknown-audience"),
        pytest.param([], [], "A client needs at least one audience.", id="no-audience"),
        pytest.param(
            ["ledger"], ["payments:read"], "Scope(s) not offered by the allowed audiences: payments:read.", id="foreign"
        ),
        pytest.param(["ledger"], ["ledger:admin"], "not offered by the allowed audiences: ledger:admin", id="unknown"),
    ],
)
def test_client_create_refuses_grants_the_platform_does_not_offer(audiences, scopes, message):
    # when a client is created with audiences or scopes that do not fit together
    with pytest.raises(InvalidClientConfiguration) as refused:
        services.client_create(name="misfit", audiences=audiences, scopes=scopes)

    # then it is refused with a stable code and nothing is stored
    assert message in refused.value.detail
    assert refused.value.code == "invalid_client_configuration"
    assert refused.value.status == 400
    assert not MachineClient.objects.filter(name="misfit").exists()


def test_client_create_normalises_grants():
    client, _ = services.client_create(
        name="dup", audiences=["payments", "ledger", "ledger"], scopes=["ledger:read", "payments:read", "ledger:read"]
    )

    client.refresh_from_db()
    assert client.allowed_audiences == ["ledger", "payments"]
    assert client.allowed_scopes == ["ledger:read", "payments:read"]


def test_secret_is_stored_only_as_its_sha256():
    # given a freshly created client
    machine = machine_client()

    # then the row holds the SHA-256 of the secret and its last four characters, never the secret
    row = MachineClient.objects.get(pk=machine.id)
    assert machine.secret.startswith("cs_")
    assert len(machine.secret) >= 40
    assert row.secret_hash == hashlib.sha256(machine.secret.encode()).hexdigest()
    assert row.secret_hash != machine.secret
    assert row.secret_last4 == machine.secret[-4:]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM identity_machineclient WHERE id = %s", [machine.id])
        (values,) = cursor.fetchall()
    assert not [v for v in values if machine.secret in str(v)]


def test_rotating_a_secret_changes_the_hash_and_records_when():
    machine = machine_client()

    new_secret = services.client_rotate_secret(client=machine.client)

    row = MachineClient.objects.get(pk=machine.id)
    assert new_secret != machine.secret
    assert row.secret_hash == services.secret_hash(new_secret)
    assert row.secret_last4 == new_secret[-4:]
    assert row.secret_rotated_at is not None
    assert row.secret_rotated_at <= timezone.now()


@pytest.mark.parametrize("ttl", [10, 59, 3601])
def test_database_refuses_a_token_lifetime_out_of_range(ttl):
    # given a client whose lifetime is set out of range, bypassing full_clean
    client = machine_client().client
    client.token_ttl_seconds = ttl

    # when it is saved, the CHECK constraint refuses it
    with pytest.raises(IntegrityError, match="client_ttl_range"), transaction.atomic():
        client.save()

    assert MachineClient.objects.get(pk=client.pk).token_ttl_seconds == 900


def test_database_refuses_a_client_without_a_secret_hash():
    client = MachineClient(name="no-secret", allowed_audiences=["ledger"], secret_hash="", secret_last4="")

    with pytest.raises(IntegrityError, match="client_secret_hash_set"), transaction.atomic():
        client.save()


def test_database_refuses_an_inactive_client_without_a_revocation_time():
    client = machine_client().client
    client.is_active = False

    with pytest.raises(IntegrityError, match="client_revoked_has_time"), transaction.atomic():
        client.save()

    # while the service sets both together
    services.client_revoke(client=client)
    row = MachineClient.objects.get(pk=client.pk)
    assert not row.is_active
    assert row.revoked_at is not None
