"""The standalone verifier, run as an outside auditor would: a copied file, a proof, the public key."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portal.audit import verifier
from portal.audit.chain import NodeSource, ingest
from portal.audit.heads import head_as_dict, head_sign, public_key_pem
from portal.audit.models import AuditEvent, AuditHead
from tests.audit.test_chain import make_event

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def auditor_dir(tmp_path, settings):
    """A directory holding only the verifier file and the public key (no portal code)."""
    settings.AUDIT_HEADS_PATH = str(tmp_path / "heads.jsonl")
    shutil.copy(REPO / "portal" / "audit" / "verifier.py", tmp_path / "verifier.py")
    (tmp_path / "audit-key.pem").write_bytes(public_key_pem())
    return tmp_path


def proof_document(seq: int) -> dict:
    head = AuditHead.objects.order_by("-tree_size").first()
    row = AuditEvent.objects.get(seq=seq)
    return {
        "event": json.loads(row.canonical),
        "leaf_index": seq - 1,
        "leaf_hash": bytes(row.leaf_hash).hex(),
        "proof": [h.hex() for h in verifier.inclusion_path(seq - 1, head.tree_size, NodeSource())],
        "head": head_as_dict(head),
    }


def run(directory: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "verifier.py", *args, "--public-key", "audit-key.pem"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_a_good_proof_verifies_and_tampered_ones_fail(auditor_dir):
    ingest([make_event("ledger", n) for n in range(1, 12)])
    head_sign()
    good = proof_document(7)
    cases = {
        "good": good,
        "event changed": {**good, "event": {**good["event"], "action": "ledger.transaction.voided"}},
        "wrong path": {**good, "proof": ["00" * 32, *good["proof"][1:]]},
        "forged head": {**good, "head": {**good["head"], "tree_size": good["head"]["tree_size"] + 1}},
    }
    results = {}
    for name, document in cases.items():
        (auditor_dir / "proof.json").write_text(json.dumps(document))
        done = run(auditor_dir, "proof.json")
        results[name] = (done.returncode, "FAIL" in done.stdout)

    assert results == {
        "good": (0, False),
        "event changed": (1, True),
        "wrong path": (1, True),
        "forged head": (1, True),
    }


def test_signed_heads_are_checked_for_consistency(auditor_dir):
    ingest([make_event("ledger", n) for n in range(1, 6)])
    head_sign()
    ingest([make_event("ledger", n) for n in range(6, 14)])
    head_sign()
    heads = [head_as_dict(h) for h in AuditHead.objects.order_by("tree_size")]
    heads[1]["consistency_proof"] = [
        h.hex() for h in verifier.consistency_path(heads[0]["tree_size"], heads[1]["tree_size"], NodeSource())
    ]
    (auditor_dir / "heads.json").write_text(json.dumps({"results": heads}))
    assert run(auditor_dir, "--heads", "heads.json").returncode == 0

    heads[1]["consistency_proof"][0] = "11" * 32
    (auditor_dir / "heads.json").write_text(json.dumps({"results": heads}))
    done = run(auditor_dir, "--heads", "heads.json")
    assert done.returncode == 1
    assert "not consistent" in done.stdout
