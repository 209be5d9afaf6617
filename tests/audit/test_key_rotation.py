"""Rotating the audit signing key: heads signed by a retired key (AUDIT_RETIRED_PUBLIC_KEY_FILES) still verify.

Key A signs the first heads, then the portal switches to key B. Every verification picks the key by the head's
``key_id``: with A's public key retired, heads of both keys verify (database, heads file, archives, the standalone
verifier); without it, A's heads are forged heads naming A's key id. Logs are built and committed as in test_verify.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.core.management import call_command

from portal.audit import keys, seal, selectors
from portal.audit import standalone_verifier as verifier
from portal.audit.chain import ingest
from portal.audit.chain_check import verify_log
from portal.audit.checks import check_retired_public_keys
from portal.audit.heads import head_sign, heads_file_read
from portal.audit.models import AuditArchive, AuditEvent, AuditHead
from tests.audit.test_archive import _paths, grow  # noqa: F401  (_paths: autouse, the heads file and archive dir)
from tests.audit.test_chain import make_event
from tests.audit.test_verify import SERVICES, build_log, first, rogue, run_command
from tests.problems import assert_problem

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_retired_keys(settings):
    settings.AUDIT_RETIRED_PUBLIC_KEY_FILES = []


def _clear_key_caches() -> None:
    keys.signing_key.cache_clear()
    seal._key.cache_clear()


class Rotation:
    """Keys A and B; ``use(key, retired=[...])`` makes ``key`` the signing key and retires the others' publics."""

    def __init__(self, settings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.a = ed25519.Ed25519PrivateKey.generate()
        self.b = ed25519.Ed25519PrivateKey.generate()

    @staticmethod
    def public_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def key_id(self, key: ed25519.Ed25519PrivateKey) -> str:
        return verifier.public_key_id(self.public_pem(key))

    def public_file(self, key: ed25519.Ed25519PrivateKey, name: str) -> Path:
        path = self.tmp_path / f"{name}.pub.pem"
        path.write_bytes(self.public_pem(key))
        return path

    def use(self, key: ed25519.Ed25519PrivateKey, *, retired: tuple[ed25519.Ed25519PrivateKey, ...] = ()) -> None:
        self.settings.AUDIT_SIGNING_KEY = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        self.settings.AUDIT_RETIRED_PUBLIC_KEY_FILES = [
            str(self.public_file(k, f"retired-{n}")) for n, k in enumerate(retired)
        ]
        _clear_key_caches()


@pytest.fixture
def rotation(settings, tmp_path):
    _clear_key_caches()
    rotation = Rotation(settings, tmp_path)
    rotation.use(rotation.a)
    yield rotation
    _clear_key_caches()  # the next test loads its own key


def grow_to(count: int) -> None:
    """Ingest events up to global seq ``count`` (as build_log does) and sign a head there."""
    start = AuditEvent.objects.count()
    ingest([make_event(SERVICES[n % 3], n // 3 + 1, id=f"evt_{n}") for n in range(start, count)])
    head_sign()


def test_heads_of_a_retired_key_verify_after_the_switch(rotation):
    # given heads at 10 and 30 signed by key A, then key B current with A retired, and a head at 40 signed by B
    build_log()
    rotation.use(rotation.b, retired=(rotation.a,))
    grow_to(40)

    # when verified (in process and as the command)
    report = verify_log()
    status, output = run_command()

    # then heads of both keys verify, in the database and in the file
    assert {h.tree_size: h.key_id for h in AuditHead.objects.all()} == {
        10: rotation.key_id(rotation.a),
        30: rotation.key_id(rotation.a),
        40: rotation.key_id(rotation.b),
    }
    a_id, b_id = rotation.key_id(rotation.a), rotation.key_id(rotation.b)
    assert [h["key_id"] for h in heads_file_read()] == [a_id, a_id, b_id]
    assert report.ok, report.problems
    assert status == 0, output
    assert selectors.head_signature_valid(head=AuditHead.objects.get(tree_size=10)) is True


def test_without_the_retired_key_its_heads_are_forged_heads_naming_it(rotation):
    # given heads signed by key A, then key B current and A not retired
    build_log()
    rotation.use(rotation.b)
    grow_to(40)

    # when verified
    report = verify_log()

    # then A's heads are forged heads, saying they were signed by A's key, which is trusted nowhere
    assert first(report) == (10, "forged head")
    details = [p.detail for p in report.problems if p.reason == "forged head"]
    unknown = f"signed by key {rotation.key_id(rotation.a)}, which is {keys.UNKNOWN_KEY}"
    assert any(f"the database's head at tree size 10: invalid signature ({unknown})" in d for d in details)
    assert any(f"the file's head at tree size 30: invalid signature ({unknown})" in d for d in details)
    assert not any("tree size 40" in d for d in details)
    assert selectors.head_signature_valid(head=AuditHead.objects.get(tree_size=10)) is False


def test_a_tampered_head_of_a_retired_key_is_still_forged(rotation):
    # given heads signed by key A, the head at 10 re-dated in the database, then B current with A retired
    build_log()
    rogue("UPDATE audit_head SET timestamp = %s WHERE tree_size = 10", ["2030-01-01T00:00:00.000000Z"])
    rotation.use(rotation.b, retired=(rotation.a,))
    grow_to(40)

    # when verified
    report = verify_log()

    # then that head's signature fails under A's key (the file's copy, untouched, verifies)
    assert first(report) == (10, "forged head")
    details = [p.detail for p in report.problems]
    bad = f"bad signature under key {rotation.key_id(rotation.a)}"
    assert f"the database's head at tree size 10: invalid signature ({bad})" in details
    assert not any("the file's head" in d for d in details)


def test_an_archive_signed_by_a_retired_key_verifies_with_it_and_fails_without(rotation, tmp_path, settings):
    # given heads at 10 and 30 signed by key A, B current with A retired, a head at 40 by B, and 1-30 archived
    grow(10)
    grow(30)
    rotation.use(rotation.b, retired=(rotation.a,))
    grow(40)
    call_command("audit_archive", "--older-than-days", "0", "--upto", "30", stdout=io.StringIO())
    (row,) = AuditArchive.objects.all()
    a_pem, b_pem = rotation.public_file(rotation.a, "a"), rotation.public_file(rotation.b, "b")
    bundle = tmp_path / "public-keys.pem"
    bundle.write_bytes(b"".join(keys.trusted_public_keys().values()))
    module = [sys.executable, "-m", "portal.audit.standalone_verifier", "--archive", row.path]

    def cli(*key_files: Path) -> subprocess.CompletedProcess:
        key_args = [arg for f in key_files for arg in ("--public-key", str(f))]
        return subprocess.run([*module, *key_args], capture_output=True, text=True, check=False)

    # when the portal and the standalone verifier check it with both keys, then with B only
    with_both = verify_log(archive_files=True)
    status, output = run_command("--archives")
    cli_both, cli_bundle, cli_b_only = cli(a_pem, b_pem), cli(bundle), cli(b_pem)
    settings.AUDIT_RETIRED_PUBLIC_KEY_FILES = []
    b_only = verify_log(archive_files=True)

    # then it verifies with A retired (every way), and fails naming A's key without it
    assert with_both.ok, with_both.problems
    assert status == 0, output
    assert cli_both.returncode == 0, cli_both.stdout + cli_both.stderr
    assert cli_bundle.returncode == 0, cli_bundle.stdout + cli_bundle.stderr
    a_id = rotation.key_id(rotation.a)
    assert cli_b_only.returncode == 1
    assert f"signed by key {a_id}, which is none of the public keys given (forged head)" in cli_b_only.stdout
    assert not b_only.ok
    assert any(f"signed by key {a_id}, which is {keys.UNKNOWN_KEY}" in p.detail for p in b_only.problems)


def test_the_public_keys_endpoint_lists_the_current_key_then_the_retired_ones(rotation, client):
    # given B current and A retired
    rotation.use(rotation.b, retired=(rotation.a,))

    # when an auditor fetches the keys
    response = client.get("/api/v1/audit/public-keys")

    # then the file holds B's then A's public key, which the verifier reads as two keys; public-key is still B's
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pem-file"
    assert response.content == rotation.public_pem(rotation.b) + rotation.public_pem(rotation.a)
    assert list(verifier.public_keys_load(response.content)) == [rotation.key_id(k) for k in (rotation.b, rotation.a)]
    assert client.get("/api/v1/audit/public-key").content == rotation.public_pem(rotation.b)


def test_the_system_check_refuses_a_retired_key_file_that_is_not_an_ed25519_public_key(settings, tmp_path):
    # given a missing file, a file that is not PEM, an RSA public key, and a good Ed25519 public key
    rsa_pem = tmp_path / "rsa.pem"
    rsa_pem.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    good = tmp_path / "good.pem"
    good.write_bytes(Rotation.public_pem(ed25519.Ed25519PrivateKey.generate()))
    cases = {"missing": tmp_path / "missing.pem", "garbage": garbage, "rsa": rsa_pem}

    # when the check runs with each
    found = {}
    for name, path in cases.items():
        settings.AUDIT_RETIRED_PUBLIC_KEY_FILES = [str(good), str(path)]
        found[name] = check_retired_public_keys(None)
    settings.AUDIT_RETIRED_PUBLIC_KEY_FILES = [str(good)]
    passed = check_retired_public_keys(None)

    # then each bad file is an error naming it; the good file passes
    for name, path in cases.items():
        (error,) = found[name]
        assert error.id == "audit.E001"
        assert str(path) in error.msg
    assert passed == []


def test_a_bad_retired_key_file_is_a_problem_on_the_status_not_an_error(settings, tmp_path):
    # given a signed head and a retired key file that is missing
    build_log()
    settings.AUDIT_RETIRED_PUBLIC_KEY_FILES = [str(tmp_path / "missing.pem")]

    # when the latest head's status is computed (the event list page shows it)
    status = selectors.head_status()

    # then the signature is not confirmed and the status says why, without raising
    assert status.signature_ok is False
    assert any("AUDIT_RETIRED_PUBLIC_KEY_FILES" in p for p in status.problems)


def test_a_bad_retired_key_file_makes_the_public_keys_endpoint_a_503_problem_not_a_partial_list(
    settings, tmp_path, client
):
    # given a retired key file that is missing, then one that holds no key
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    for path in (tmp_path / "missing.pem", garbage):
        settings.AUDIT_RETIRED_PUBLIC_KEY_FILES = [str(path)]

        # when an auditor fetches the keys
        response = client.get("/api/v1/audit/public-keys")

        # then a problem says the list is unavailable (no file path shown), never a 500 or the current key alone
        problem = assert_problem(response, 503, "audit_keys_unavailable")
        assert "AUDIT_RETIRED_PUBLIC_KEY_FILES" in problem["detail"]
        assert str(tmp_path) not in response.content.decode()
