"""Identity data: machine clients that exchange credentials for JWTs."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from services.kit.ids import id_new


def _client_id() -> str:
    return id_new("cli")


class MachineClient(models.Model):
    """A service or outside caller: client id + hashed secret, allowed audiences and scopes."""

    id = models.CharField(primary_key=True, max_length=40, default=_client_id, editable=False, verbose_name="client id")
    name = models.CharField(max_length=100, unique=True, help_text="Who this client is, e.g. 'payments-service'.")
    description = models.TextField(blank=True)
    # SHA-256 of a 256-bit random secret: a slow password hash adds nothing against
    # brute force at that entropy and would make every token request cost ~100 ms.
    secret_hash = models.CharField(max_length=64, editable=False)
    secret_last4 = models.CharField(max_length=4, editable=False, help_text="Last characters, to tell secrets apart.")
    allowed_audiences = ArrayField(models.CharField(max_length=40), default=list)
    allowed_scopes = ArrayField(models.CharField(max_length=60), default=list, blank=True)
    token_ttl_seconds = models.PositiveIntegerField(
        default=900, validators=[MinValueValidator(60), MaxValueValidator(3600)], help_text="Lifetime of issued tokens."
    )
    is_active = models.BooleanField(default=True, help_text="Revoked clients cannot obtain tokens.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    previous_secret_hash = models.CharField(
        max_length=64, blank=True, default="", editable=False, help_text="The secret before the last rotation."
    )
    previous_secret_valid_until = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Until then the previous secret still obtains tokens."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # What every token verifier must refuse (published on Redis and at /.well-known/atrium-revocations.json):
    # tokens issued at or before tokens_not_before (the last revocation; kept if the client is reactivated), and
    # tokens minted with an older secret than the current generation (each rotation adds one; tokens carry theirs
    # in the claim "sgen"), those of the previous one once its grace is over. revocation_until: after it every
    # token those rules could refuse has expired, so the client is no longer published.
    secret_generation = models.PositiveIntegerField(default=0, editable=False)
    tokens_not_before = models.DateTimeField(null=True, blank=True, editable=False)
    revocation_until = models.DateTimeField(null=True, blank=True, editable=False, db_index=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "machine client"
        constraints = [
            models.CheckConstraint(
                condition=Q(token_ttl_seconds__gte=60) & Q(token_ttl_seconds__lte=3600), name="client_ttl_range"
            ),
            models.CheckConstraint(condition=~Q(secret_hash=""), name="client_secret_hash_set"),
            models.CheckConstraint(
                condition=Q(is_active=True) | Q(revoked_at__isnull=False), name="client_revoked_has_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"
