"""The portal's audit trail: an append-only, hash-chained log with an RFC 6962 Merkle tree over it.

Rows are only ever inserted (triggers in migration 0002 reject UPDATE, DELETE and TRUNCATE; the
archival command alone may delete, see ``audit_archive``). ``canonical`` holds the exact bytes that
were hashed; the other columns are copies of its fields for search, and ``audit_verify`` checks
that they still agree.
"""

from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    seq = models.BigIntegerField(primary_key=True, help_text="Global gapless sequence (leaf index + 1).")
    event_id = models.CharField(max_length=64, unique=True)
    service = models.CharField(max_length=40)
    service_seq = models.BigIntegerField()
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField()
    actor_type = models.CharField(max_length=10)
    actor_id = models.CharField(max_length=200, blank=True)
    actor_display = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=200)
    outcome = models.CharField(max_length=10)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=200, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    source_ip = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    changes = models.JSONField(default=dict)
    metadata = models.JSONField(default=dict)
    canonical = models.TextField(help_text="The canonical JSON that was hashed.")
    leaf_hash = models.BinaryField(max_length=32)
    hash = models.BinaryField(max_length=32)
    prev_hash = models.BinaryField(max_length=32)

    class Meta:
        db_table = "audit_event"
        ordering = ["-seq"]
        constraints = [
            models.UniqueConstraint(fields=["service", "service_seq"], name="audit_event_service_seq_unique"),
        ]
        indexes = [
            models.Index(fields=["service", "-seq"], name="audit_event_service"),
            models.Index(fields=["actor_id", "-seq"], name="audit_event_actor"),
            models.Index(fields=["object_type", "object_id", "-seq"], name="audit_event_object"),
            models.Index(fields=["request_id"], name="audit_event_request"),
            models.Index(
                fields=["action", "-seq"], name="audit_event_action", opclasses=["varchar_pattern_ops", "int8_ops"]
            ),
            models.Index(fields=["outcome", "-seq"], name="audit_event_outcome"),
            models.Index(fields=["actor_type", "-seq"], name="audit_event_actor_type"),
            # A btree, not BRIN: occurred_at comes from each service's clock, so it is not in seq order.
            # Time-range searches page by (occurred_at, seq), newest first: one backward index range scan.
            models.Index(fields=["occurred_at", "seq"], name="audit_event_occurred"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.outcome}"


class AuditNode(models.Model):
    """A complete, aligned subtree root of the Merkle tree: ``2**level`` leaves starting at ``index * 2**level``."""

    pk = models.CompositePrimaryKey("level", "index")
    level = models.SmallIntegerField()
    index = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)

    class Meta:
        db_table = "audit_node"

    def __str__(self) -> str:
        return f"node {self.level}/{self.index}"


class AuditChainState(models.Model):
    """The sequencer's state (one row): size, last chain hash, and the Merkle tree's right frontier."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    size = models.BigIntegerField(default=0)
    last_hash = models.BinaryField(max_length=32, default=bytes(32))
    frontier = models.JSONField(default=dict, help_text="level → hex hash of the right-edge complete subtree")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "audit_chain_state"

    def __str__(self) -> str:
        return f"audit chain: {self.size} events"


class AuditHead(models.Model):
    """A signed tree head: ``{tree_size, root_hash, last_hash, timestamp}`` signed with the audit Ed25519 key."""

    tree_size = models.BigIntegerField(primary_key=True)
    root_hash = models.CharField(max_length=64)
    last_hash = models.CharField(max_length=64)
    timestamp = models.CharField(max_length=40)
    signature = models.CharField(max_length=200)
    key_id = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "audit_head"
        ordering = ["-tree_size"]

    def __str__(self) -> str:
        return f"head {self.tree_size} @ {self.timestamp}"


class AuditRejected(models.Model):
    """An event the sequencer could not accept (malformed, or a conflicting service sequence): kept, not lost."""

    received_at = models.DateTimeField(auto_now_add=True)
    reason = models.TextField()
    payload = models.JSONField()

    class Meta:
        db_table = "audit_rejected"
        ordering = ["-id"]
        verbose_name = "rejected audit event"
        verbose_name_plural = "rejected audit events"

    def __str__(self) -> str:
        return f"rejected {self.id}: {self.reason[:60]}"


class AuditArchive(models.Model):
    """A prefix of the log moved out of ``audit_event`` by ``audit_archive``: seqs [first_seq, last_seq].

    ``last_seq`` is always the size of a signed head, so the live log's verification starts from that head
    (its last hash and root); the archive file holds the events, their inclusion proofs and the heads.
    Inserted before any row is deleted (deletion may take several transactions), never updated.
    """

    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField(unique=True, help_text="The signed head's tree size the archive ends at.")
    events = models.BigIntegerField()
    path = models.CharField(max_length=1000, help_text="Where the archive file was written.")
    file_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the archive file as written.")
    file_bytes = models.BigIntegerField()
    head_root_hash = models.CharField(max_length=64)
    head_last_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "audit_archive"
        ordering = ["-last_seq"]
        verbose_name = "audit archive"

    def __str__(self) -> str:
        return f"archive of seqs {self.first_seq}-{self.last_seq}"


class AuditSeal(models.Model):
    """One sequencer batch: seqs [first_seq, last_seq] were written by one transaction, whose id is ``row_xmin``.

    PostgreSQL stamps every row version with the id of the transaction that wrote it (``xmin``); an
    UPDATE, even with the append-only triggers disabled, writes a new version with a new id. So a row
    whose ``xmin`` is still its seal's is the version the sequencer wrote, and its search columns are
    the ones the sequencer derived from its canonical JSON: ``audit_verify`` need not parse it again.
    ``mac`` (HMAC-SHA256 under a key derived from the audit signing key, which the database does not
    hold) keeps a database administrator from re-sealing rows they rewrote. Rows without a valid seal
    are compared with their JSON field by field.
    """

    first_seq = models.BigIntegerField(primary_key=True)
    last_seq = models.BigIntegerField()
    row_xmin = models.BigIntegerField(help_text="The 32-bit id of the transaction that wrote the rows.")
    key_id = models.CharField(max_length=100)
    mac = models.BinaryField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "audit_seal"
        ordering = ["-first_seq"]

    def __str__(self) -> str:
        return f"seal of seqs {self.first_seq}-{self.last_seq}"
