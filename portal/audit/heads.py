"""Signed tree heads: ``{tree_size, root_hash, last_hash, timestamp}`` signed with the audit Ed25519 key.

Each head is stored in ``audit_head`` and, after commit, in the sink outside the database that
``AUDIT_HEADS_SINK`` names (``portal.audit.sinks``: the JSONL file at ``AUDIT_HEADS_PATH`` by default, an
S3 bucket with Object Lock in production), so rewriting the database cannot also rewrite the proofs. A
head the sink missed (the bucket was down) is delivered by ``heads_sync``, which every ``head_sign`` runs
first. The key is ``portal.audit.keys``'s.
"""

from __future__ import annotations

import base64
from typing import Any

from django.db import transaction
from django.utils import timezone

from portal.audit import standalone_verifier as verifier
from portal.audit.chain import frontier_root
from portal.audit.keys import UNKNOWN_KEY, key_id, signing_key, trusted_public_keys
from portal.audit.keys import public_key_pem as public_key_pem  # views and tests import it from here
from portal.audit.models import AuditChainState, AuditHead
from portal.audit.sinks import get_sink
from portal.audit.standalone_verifier import head_message
from services.kit.logs import get_logger
from services.kit.outbox import isoformat

log = get_logger(__name__)


def head_as_dict(head: AuditHead) -> dict[str, Any]:
    return {
        "tree_size": head.tree_size,
        "root_hash": head.root_hash,
        "last_hash": head.last_hash,
        "timestamp": head.timestamp,
        "signature": head.signature,
        "key_id": head.key_id,
    }


def head_sign(*, force: bool = False) -> AuditHead | None:
    """Sign the current tree if it grew since the last head (or always with ``force``); return the head.

    First deliver any recent head the outside sink missed (``heads_sync``); after commit, put the new head
    there. Neither failing stops the signing: the head is in the database and the next run delivers it.
    """
    if not transaction.get_connection().in_atomic_block:  # inside a transaction, heads may yet roll back
        _sync_logged()
    with transaction.atomic():
        state, _ = AuditChainState.objects.select_for_update().get_or_create(id=1)
        latest = AuditHead.objects.order_by("-tree_size").first()
        if state.size == 0 or (latest is not None and latest.tree_size >= state.size and not force):
            return latest
        if latest is not None and latest.tree_size == state.size:
            return latest  # one head per tree size
        head = {
            "tree_size": state.size,
            "root_hash": frontier_root(state.frontier).hex(),
            "last_hash": bytes(state.last_hash).hex(),
            "timestamp": isoformat(timezone.now()),
        }
        signature = base64.b64encode(signing_key().sign(head_message(head))).decode()
        row = AuditHead.objects.create(**head, signature=signature, key_id=key_id())
        transaction.on_commit(lambda: _put_logged(row))
    log.info("audit.head_signed", tree_size=row.tree_size, root_hash=row.root_hash)
    return row


def head_signature_problem(head: dict[str, Any], keys: verifier.PublicKeys | None = None) -> str | None:
    """Why ``head`` is not validly signed (None: it is), by the key its ``key_id`` names among the current and
    retired keys (``keys``: ``trusted_public_keys()``, loaded once by a caller checking many heads)."""
    return verifier.head_signature_problem(head, trusted_public_keys() if keys is None else keys, unknown=UNKNOWN_KEY)


def heads_outside_put(head: AuditHead | dict[str, Any]) -> None:
    """Store ``head`` in the sink outside the database; raises if the sink refuses or cannot be reached.

    Putting a head the sink already holds is a no-op; a different head at the same tree size raises
    ``sinks.HeadConflictError``.
    """
    get_sink().put(head if isinstance(head, dict) else head_as_dict(head))


def heads_outside_read() -> list[dict[str, Any]]:
    """Every head held outside the database (as ``head_as_dict`` returns them), ordered by tree size."""
    return get_sink().read()


# The names from when the only sink was the JSONL file: chain_check.py and the tests use them.
def heads_file_append(head: AuditHead) -> None:
    """Store ``head`` in the configured sink (the JSONL file by default); see ``heads_outside_put``."""
    heads_outside_put(head)


def heads_file_read() -> list[dict[str, Any]]:
    """The heads held in the configured sink (the JSONL file by default); see ``heads_outside_read``."""
    return heads_outside_read()


SYNC_WINDOW = 100  # how many of the newest database heads an ordinary heads_sync compares


def heads_sync(*, full: bool = False) -> int:
    """Put every database head the outside sink lacks; return how many were put.

    Ordinarily only the newest ``SYNC_WINDOW`` heads are compared (one listing of the sink from the oldest
    of them on): cheap when nothing is missing. When the oldest of them is missing too, the gap may reach
    further back, and everything is compared, as it is with ``full=True``. A database head whose signature
    does not verify is never copied out (a forgery must not gain a second copy). Every missing head is
    tried; if any failed, the first error is raised afterwards (each is logged).
    """
    sink = get_sink()
    keys = trusted_public_keys()
    if full:
        held = sink.sizes_after(-1)
        candidates = AuditHead.objects.order_by("tree_size").iterator()
    else:
        recent = list(AuditHead.objects.order_by("-tree_size")[:SYNC_WINDOW])
        if not recent:
            return 0
        floor = recent[-1].tree_size
        held = sink.sizes_after(floor - 1)
        if floor not in held and AuditHead.objects.filter(tree_size__lt=floor).exists():
            return heads_sync(full=True)
        candidates = reversed(recent)
    put = 0
    first_error: Exception | None = None
    for row in candidates:
        if row.tree_size in held:
            continue
        head = head_as_dict(row)
        try:
            why = head_signature_problem(head, keys)
            if why is not None:
                raise ValueError(f"the database's head at tree size {row.tree_size} has an invalid signature: {why}")
            sink.put(head)
        except Exception as exc:
            log.error("audit.head_sync_failed", sink=sink.describe(), tree_size=row.tree_size, error=str(exc))
            first_error = first_error or exc
            continue
        put += 1
    if put:
        log.warning("audit.heads_synced", sink=sink.describe(), count=put, full=full)
    if first_error is not None:
        raise first_error
    return put


def _put_logged(row: AuditHead) -> None:
    """After commit: put the new head outside; a failure is logged, not raised (``heads_sync`` retries)."""
    try:
        heads_outside_put(row)
    except Exception as exc:
        log.error(
            "audit.head_put_failed",
            sink=_where(),
            tree_size=row.tree_size,
            error=str(exc),
            exc_info=True,
        )


def _sync_logged() -> None:
    try:
        heads_sync()
    except Exception as exc:
        log.error("audit.heads_sync_failed", sink=_where(), error=str(exc), exc_info=True)


def _where() -> str:
    try:
        return get_sink().describe()
    except Exception:  # a misconfigured sink: the error being logged says why
        return "(unconfigured)"
