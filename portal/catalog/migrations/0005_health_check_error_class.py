"""Health checks keep an error class, never text: the ``detail`` column (up to 200 characters of a non-2xx
body, or an exception's message telling an open port from a closed one) is read into a class, then dropped
with everything it held."""

from django.db import migrations, models

ERRORS = ("invalid_url", "blocked", "dns", "refused", "timeout", "tls", "connection", "status")
LABELS = {
    "invalid_url": "not a URL the portal polls",
    "blocked": "an address the outbound guard refuses (not allow-listed)",
    "dns": "the name did not resolve",
    "refused": "connection refused",
    "timeout": "no complete answer in time",
    "tls": "TLS handshake or certificate check failed",
    "connection": "connection broken, or not HTTP",
    "status": "answered, not with 2xx",
}

# The old details were "timed out", "slow", "<ExceptionType>: <message>" or a body's first 200 characters.
CLASSIFY = """
UPDATE catalog_health_check SET error = CASE
    WHEN http_status IS NOT NULL AND (http_status < 200 OR http_status >= 300) THEN 'status'
    WHEN http_status IS NOT NULL THEN ''
    WHEN detail = 'timed out' OR detail ILIKE '%timeout%' THEN 'timeout'
    WHEN detail ILIKE '%refused%' THEN 'refused'
    WHEN detail ILIKE '%ssl%' OR detail ILIKE '%certificate%' THEN 'tls'
    WHEN detail ILIKE '%name or service%' OR detail ILIKE '%name resolution%' OR detail ILIKE '%nodename%'
        THEN 'dns'
    WHEN detail ILIKE 'UnsupportedProtocol%' OR detail ILIKE 'InvalidURL%' OR detail ILIKE 'LocalProtocolError%'
        THEN 'invalid_url'
    WHEN status = 'critical' THEN 'connection'
    ELSE ''
END
"""


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0004_observed_calls"),
    ]

    operations = [
        migrations.AddField(
            model_name="healthcheck",
            name="error",
            field=models.CharField(
                blank=True,
                choices=[(e, LABELS[e]) for e in ERRORS],
                default="",
                help_text="Blank, or what failed: timeout, refused, dns, tls, connection, status, blocked, invalid_url.",
                max_length=12,
            ),
        ),
        migrations.RunSQL(CLASSIFY, reverse_sql=migrations.RunSQL.noop),
        migrations.RemoveField(model_name="healthcheck", name="detail"),
        migrations.AddConstraint(
            model_name="healthcheck",
            constraint=models.CheckConstraint(
                condition=models.Q(("error", ""), ("error__in", ERRORS), _connector="OR"),
                name="catalog_health_check_error_class",
            ),
        ),
    ]
