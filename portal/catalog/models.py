"""The service catalog: who runs what, who owns it, what it declares it depends on, and its live instances.

A :class:`Service` is registered by the machine client of the process that runs it (``PUT
/api/v1/catalog/services/{slug}`` with scope ``catalog:register``) from a manifest kept in its own code, or
imported from a YAML manifest; the first client to register a slug owns it (``registered_by``). Each running
process heartbeats its :class:`Instance`. Nothing here is deleted when it stops: an instance that stops
heartbeating is marked, and kept in history.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from services.kit import outbound

SLUG_REGEX = r"^[a-z][a-z0-9-]{0,49}$"
SLUG_HELP = "1 to 50 characters: lower-case letters, digits and dashes, a letter first."
slug_validator = RegexValidator(SLUG_REGEX, SLUG_HELP)


class Lifecycle(models.TextChoices):
    EXPERIMENTAL = "experimental"
    PRODUCTION = "production"
    DEPRECATED = "deprecated"


class Role(models.TextChoices):
    """What a process does for the service it is part of."""

    WEB = "web"  # its HTTP API (the one a service's health checks and "critical" are about)
    WORKER = "worker"  # a Celery worker, for one or more queues
    RELAY = "relay"  # the outbox relay
    BEAT = "beat"  # the periodic task scheduler
    MONITOR = "monitor"  # e.g. the job monitor
    OTHER = "other"


class InstanceStatus(models.TextChoices):
    PASSING = "passing"
    CRITICAL = "critical"  # missed its heartbeats
    GONE = "gone"  # gone for longer: kept in history


class Team(models.Model):
    slug = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    contact = models.CharField(max_length=200, blank=True, default="", help_text="E-mail or chat channel.")
    on_call = models.CharField(max_length=200, blank=True, default="", help_text="Who is paged, or the rota.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "catalog_team"
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class Service(models.Model):
    """One catalog entry: a process that registered itself (a web server, a worker, a relay, beat, a monitor) or
    an outside service imported from YAML. ``part_of`` names the service it belongs to and ``role`` what it does
    there: the catalog's *services* are the groups of entries by ``part_of`` (:mod:`portal.catalog.systems`)."""

    slug = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    display_name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    owner = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="services")
    part_of = models.CharField(
        max_length=50,
        blank=True,
        validators=[slug_validator],
        db_index=True,
        help_text="The slug of the service this process belongs to (blank: its own slug, a service of its own).",
    )
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.WEB)
    tier = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(3)], help_text="1: most critical."
    )
    lifecycle = models.CharField(max_length=12, choices=Lifecycle.choices, default=Lifecycle.EXPERIMENTAL)
    repository_url = models.URLField(blank=True, default="")
    docs_url = models.URLField(blank=True, default="")
    base_url = models.URLField(blank=True, default="")
    health_url = models.URLField(blank=True, default="")
    openapi_url = models.URLField(blank=True, default="")
    version = models.CharField(max_length=100, blank=True, default="")
    queues = ArrayField(models.CharField(max_length=100), default=list, blank=True, help_text="Queues it consumes.")
    tags = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    health_interval_seconds = models.PositiveIntegerField(
        default=15, validators=[MinValueValidator(5), MaxValueValidator(3600)], help_text="How often health is polled."
    )
    registered_by = models.CharField(
        max_length=200, blank=True, default="", help_text="The machine client that registered it (and may update it)."
    )
    health_status = models.CharField(
        max_length=8, blank=True, default="", help_text="Its latest health check's status (blank: never checked)."
    )
    last_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "catalog_service"
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(condition=Q(tier__gte=1) & Q(tier__lte=3), name="catalog_service_tier_1_to_3"),
            models.CheckConstraint(condition=Q(lifecycle__in=Lifecycle.values), name="catalog_service_lifecycle"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="catalog_service_role"),
            models.CheckConstraint(condition=~Q(part_of=""), name="catalog_service_part_of"),
        ]

    def __str__(self) -> str:
        return self.display_name or self.slug

    def save(self, *args: object, **kwargs: object) -> None:
        if not self.part_of:  # a service of its own
            self.part_of = self.slug
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class Dependency(models.Model):
    """Declared: ``service`` says it depends on another service, or on a resource (``queue:payments``)."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="dependencies")
    target = models.ForeignKey(Service, null=True, blank=True, on_delete=models.CASCADE, related_name="dependents")
    target_slug = models.CharField(
        max_length=50, blank=True, default="", help_text="A service not (yet) in the catalog, by its slug."
    )
    resource = models.CharField(max_length=200, blank=True, default="", help_text="E.g. queue:payments, postgres.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "catalog_dependency"
        verbose_name_plural = "dependencies"
        ordering = ["service__slug", "target_slug", "resource"]
        constraints = [
            models.CheckConstraint(
                condition=(~Q(target_slug="") & Q(resource="")) | (Q(target_slug="") & ~Q(resource="")),
                name="catalog_dependency_service_or_resource",
            ),
            models.UniqueConstraint(fields=["service", "target_slug", "resource"], name="catalog_dependency_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.service.slug} → {self.target_slug or self.resource}"


class Instance(models.Model):
    """One running process of a service, known by its heartbeats."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="instances")
    instance = models.CharField(max_length=200, help_text="Chosen by the process: host, pid and start time.")
    host = models.CharField(max_length=255, blank=True, default="")
    pid = models.PositiveIntegerField(null=True, blank=True)
    version = models.CharField(max_length=100, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    first_heartbeat = models.DateTimeField()
    last_heartbeat = models.DateTimeField()
    heartbeats = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=8, choices=InstanceStatus.choices, default=InstanceStatus.PASSING)

    class Meta:
        db_table = "catalog_instance"
        ordering = ["service__slug", "-last_heartbeat"]
        constraints = [
            models.UniqueConstraint(fields=["service", "instance"], name="catalog_instance_unique"),
            models.CheckConstraint(condition=Q(status__in=InstanceStatus.values), name="catalog_instance_status"),
        ]
        indexes = [models.Index(fields=["status", "last_heartbeat"], name="catalog_instance_liveness")]

    def __str__(self) -> str:
        return f"{self.service.slug}/{self.instance}"


class HealthStatus(models.TextChoices):
    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"


# What went wrong in a check: the outbound guard's error class, never a response body or an exception's text
# (either would show what answers inside the network, or tell an open port from a closed one).
HEALTH_ERRORS = outbound.ERRORS
HEALTH_ERROR_LABELS = {
    outbound.INVALID_URL: "not a URL the portal polls",
    outbound.BLOCKED: "an address the outbound guard refuses (not allow-listed)",
    outbound.DNS: "the name did not resolve",
    outbound.REFUSED: "connection refused",
    outbound.TIMEOUT: "no complete answer in time",
    outbound.TLS: "TLS handshake or certificate check failed",
    outbound.CONNECTION: "connection broken, or not HTTP",
    outbound.STATUS: "answered, not with 2xx",
}


class HealthCheck(models.Model):
    """One poll of a service's health URL: a status code and an error class, nothing of the answer."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="health_checks")
    status = models.CharField(max_length=8, choices=HealthStatus.choices)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(
        max_length=12,
        blank=True,
        default="",
        choices=[(e, HEALTH_ERROR_LABELS[e]) for e in HEALTH_ERRORS],
        help_text="Blank, or what failed: timeout, refused, dns, tls, connection, status, blocked, invalid_url.",
    )
    checked_at = models.DateTimeField()

    class Meta:
        db_table = "catalog_health_check"
        ordering = ["-checked_at"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=HealthStatus.values), name="catalog_health_check_status"),
            models.CheckConstraint(
                condition=Q(error="") | Q(error__in=HEALTH_ERRORS), name="catalog_health_check_error_class"
            ),
        ]
        indexes = [models.Index(fields=["service", "checked_at"], name="catalog_health_service_time")]

    def __str__(self) -> str:
        return f"{self.service.slug} {self.status} at {self.checked_at:%Y-%m-%d %H:%M:%S}"


class HealthHour(models.Model):
    """The checks of one service in one hour, once they are older than ``CATALOG_HEALTH_RAW_DAYS``: counted by
    status (what uptime needs), the single checks deleted."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="health_hours")
    hour = models.DateTimeField(help_text="The hour's start (UTC).")
    passing = models.PositiveIntegerField(default=0)
    warning = models.PositiveIntegerField(default=0)
    critical = models.PositiveIntegerField(default=0)
    latency_ms_total = models.PositiveBigIntegerField(default=0)
    latency_count = models.PositiveIntegerField(default=0)
    covered_seconds = models.FloatField(
        default=0, help_text="Time its checks covered (each until the next, at most a few intervals)."
    )
    up_seconds = models.FloatField(default=0, help_text="Of that, covered by checks that were not critical.")

    class Meta:
        db_table = "catalog_health_hour"
        ordering = ["-hour"]
        constraints = [models.UniqueConstraint(fields=["service", "hour"], name="catalog_health_hour_unique")]

    def __str__(self) -> str:
        return f"{self.service.slug} {self.hour:%Y-%m-%d %H}:00"


class ObservedCall(models.Model):
    """Calls a service reported receiving from one machine client (the token's subject), summed."""

    callee = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="calls_received")
    caller_client = models.CharField(max_length=200, help_text="The calling token's subject (a machine client).")
    calls = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        db_table = "catalog_observed_call"
        ordering = ["callee__slug", "caller_client"]
        constraints = [models.UniqueConstraint(fields=["callee", "caller_client"], name="catalog_observed_call_unique")]

    def __str__(self) -> str:
        return f"{self.caller_client} → {self.callee.slug} ({self.calls})"
