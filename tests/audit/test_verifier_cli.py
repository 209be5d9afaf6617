"""The standalone verifier, run as an outside auditor would: a proof, the public key, and one file of code.

Each check runs twice: as ``python -m portal.audit.standalone_verifier`` from the repository, and as a copy of
``standalone_verifier.py`` alone in an empty directory whose import path makes ``portal``, ``services`` and ``django``
fail loudly if imported (so the copy provably needs no portal code).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from portal.audit import standalone_verifier as verifier
from portal.audit.chain import NodeSource, ingest
from portal.audit.heads import head_as_dict, head_sign, public_key_pem
from portal.audit.models import AuditEvent, AuditHead
from tests.audit.test_chain import make_event

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]
POISONED = ("portal", "services", "django")
MODES = ("module", "copied file")


@pytest.fixture
def auditor(tmp_path, settings):
    """Run the verifier on documents written to a temporary directory; ``run(mode, *args)``: (status, stdout)."""
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    alone = tmp_path / "auditor"
    alone.mkdir()
    shutil.copy(REPO / "portal" / "audit" / "standalone_verifier.py", alone / "standalone_verifier.py")
    poison = tmp_path / "poison"
    for package in POISONED:
        (poison / package).mkdir(parents=True)
        (poison / package / "__init__.py").write_text(f"raise ImportError('the verifier imported {package}')\n")
    key = tmp_path / "audit-key.pem"
    key.write_bytes(public_key_pem())

    def run(mode: str, document: dict | list, option: str | None = None) -> tuple[int, str]:
        path = tmp_path / "document.json"
        path.write_text(json.dumps(document))
        args = [str(path)] if option is None else [option, str(path)]
        if mode == "module":
            command, cwd, env = (
                [sys.executable, "-m", "portal.audit.standalone_verifier"],
                REPO,
                {"PATH": "/usr/bin:/bin"},
            )
        else:
            command, cwd, env = (
                [sys.executable, "standalone_verifier.py"],
                alone,
                {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(poison)},
            )
        done = subprocess.run(
            [*command, *args, "--public-key", str(key)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout

    return run


def proof_document(seq: int) -> dict:
    """What ``GET /api/v1/audit/events/{id}/proof`` returns for event ``seq`` against the latest head."""
    head = AuditHead.objects.order_by("-tree_size").first()
    row = AuditEvent.objects.get(seq=seq)
    return {
        "event": json.loads(row.canonical),
        "leaf_index": seq - 1,
        "leaf_hash": bytes(row.leaf_hash).hex(),
        "proof": [h.hex() for h in verifier.inclusion_path(seq - 1, head.tree_size, NodeSource())],
        "head": head_as_dict(head),
    }


def resigned(head: dict, **changes: str) -> dict:
    """``head`` with ``changes``, signed with a key that is not the audit key."""
    forged = {**head, **changes}
    forged["signature"] = base64.b64encode(
        ed25519.Ed25519PrivateKey.generate().sign(verifier.head_message(forged))
    ).decode()
    return forged


@pytest.mark.parametrize("mode", MODES)
def test_a_good_proof_verifies_and_tampered_ones_fail(auditor, mode):
    # given 11 chained events, a signed head, and the inclusion proof of event 7
    ingest([make_event("ledger", n) for n in range(1, 12)])
    head_sign()
    good = proof_document(7)
    cases = {
        "good": good,
        "event field changed": {**good, "event": {**good["event"], "action": "ledger.transaction.voided"}},
        "wrong proof hash": {**good, "proof": ["00" * 32, *good["proof"][1:]]},
        "head signed by another key": {**good, "head": resigned(good["head"])},
        "head root replaced": {**good, "head": {**good["head"], "root_hash": "ab" * 32}},
    }

    # when the auditor runs the verifier on each
    results = {name: auditor(mode, document) for name, document in cases.items()}

    # then only the good proof passes; every tampered one fails with exit status 1 and says FAIL
    status, output = results.pop("good")
    assert (status, output.startswith("OK: event evt_ledger_7 is leaf 6")) == (0, True)
    assert {name: (status, "FAIL" in output) for name, (status, output) in results.items()} == {
        name: (1, True) for name in results
    }
    assert "event modified" in results["event field changed"][1]
    assert "forged head" in results["head signed by another key"][1]


@pytest.mark.parametrize("mode", MODES)
def test_signed_heads_are_checked_for_signatures_and_consistency(auditor, mode):
    # given three signed heads (5, 8 and 13 events), each with the consistency proof from the previous one
    for end in (5, 8, 13):
        ingest([make_event("ledger", n) for n in range(1, end + 1)])
        head_sign()
    heads = [head_as_dict(h) for h in AuditHead.objects.order_by("tree_size")]
    nodes = NodeSource()
    for older, newer in itertools.pairwise(heads):
        path = verifier.consistency_path(older["tree_size"], newer["tree_size"], nodes)
        newer["consistency_proof"] = [h.hex() for h in path]

    # when the auditor checks them as served ({"results": [...]}), then with a bad proof, then a forged head
    good = auditor(mode, {"results": heads}, "--heads")
    bad_proof = [*heads[:2], {**heads[2], "consistency_proof": ["11" * 32, *heads[2]["consistency_proof"][1:]]}]
    inconsistent = auditor(mode, bad_proof, "--heads")
    forged = auditor(mode, [heads[0], resigned(heads[1], root_hash="cd" * 32), heads[2]], "--heads")

    # then the good list passes, the bad proof and the forged head fail
    assert good == (0, "OK: 3 signed heads, each signature valid and each consistent with the previous\n")
    assert inconsistent[0] == 1
    assert "FAIL: heads at tree sizes 8 and 13 are not consistent" in inconsistent[1]
    assert forged[0] == 1
    assert "FAIL: head at tree size 8: bad signature under key " in forged[1]
