"""Settings for the portal: catalog, audit trail, job dashboard and identity provider."""

from pathlib import Path
from urllib.parse import urlsplit

from services.kit.conf import env, kit_settings
from services.kit.keys import private_pem_read

BASE_DIR = Path(__file__).resolve().parent

kit = kit_settings(
    service="portal",
    root_urlconf="portal.urls",
    wsgi_application="portal.wsgi.application",
    apps=[
        "django.contrib.postgres",
        "portal.home",  # the dashboard at /admin/ (docs/home.md)
        "portal.identity",
        "portal.audit",
        "portal.catalog",
        "portal.jobs",
        "portal.trace",
        # The periodic schedule in the database (docs/jobs.md, "Schedule"): beat's DatabaseScheduler, the admin.
        "django_celery_beat",
        "oauth2_provider",  # people's sign-in to every service admin: OpenID Connect provider (docs/sso.md)
    ],
    celery_imports=["workers.portal", "workers.audit"],
)

# Shared by every process (services/kit/conf.py: KitSettings), each by name.
ATRIUM_SERVICE = kit.ATRIUM_SERVICE
ATRIUM_ENV = kit.ATRIUM_ENV
ATRIUM_VAR_DIR = kit.ATRIUM_VAR_DIR
DEBUG = kit.DEBUG
SECRET_KEY = kit.SECRET_KEY
ALLOWED_HOSTS = kit.ALLOWED_HOSTS
INSTALLED_APPS = kit.INSTALLED_APPS
MIDDLEWARE = kit.MIDDLEWARE
ROOT_URLCONF = kit.ROOT_URLCONF
WSGI_APPLICATION = kit.WSGI_APPLICATION
# portal/templates first: its admin/base_site.html adds the trace's search box to every admin page's header.
TEMPLATES = [{**kit.TEMPLATES[0], "DIRS": [BASE_DIR / "templates"]}]
DATABASES = kit.DATABASES
DEFAULT_AUTO_FIELD = kit.DEFAULT_AUTO_FIELD
AUTH_PASSWORD_VALIDATORS = kit.AUTH_PASSWORD_VALIDATORS
PASSWORD_HASHERS = kit.PASSWORD_HASHERS
LANGUAGE_CODE = kit.LANGUAGE_CODE
TIME_ZONE = kit.TIME_ZONE
USE_I18N = kit.USE_I18N
USE_TZ = kit.USE_TZ
STATIC_URL = kit.STATIC_URL
STATIC_ROOT = kit.STATIC_ROOT
STORAGES = kit.STORAGES
WHITENOISE_USE_FINDERS = kit.WHITENOISE_USE_FINDERS
WHITENOISE_AUTOREFRESH = kit.WHITENOISE_AUTOREFRESH
ATRIUM_MAX_BODY_BYTES = kit.ATRIUM_MAX_BODY_BYTES
# POST /api/v1/audit/events:ingest has its own limit (its view's max_body_setting): 1,000 events of ~8 KB.
AUDIT_INGEST_MAX_BODY_BYTES = env.int("AUDIT_INGEST_MAX_BODY_BYTES", default=8 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(kit.DATA_UPLOAD_MAX_MEMORY_SIZE, AUDIT_INGEST_MAX_BODY_BYTES)
ATRIUM_MAX_JSON_DEPTH = kit.ATRIUM_MAX_JSON_DEPTH
# One OpenAPI enum per choice set: the trace's webhooks block has a "state" of its own beside the jobs' states.
SPECTACULAR_SETTINGS = {
    **kit.SPECTACULAR_SETTINGS,
    "ENUM_NAME_OVERRIDES": {
        **kit.SPECTACULAR_SETTINGS.get("ENUM_NAME_OVERRIDES", {}),
        "StateEnum": "portal.jobs.models.JobState",
        "TraceWebhooksStateEnum": ["ok", "unavailable", "none"],
    },
}
JWT_ISSUER = kit.JWT_ISSUER
JWT_AUDIENCE = kit.JWT_AUDIENCE
JWT_JWKS_URL = kit.JWT_JWKS_URL
JWT_JWKS_CACHE_SECONDS = kit.JWT_JWKS_CACHE_SECONDS
JWT_LEEWAY_SECONDS = kit.JWT_LEEWAY_SECONDS
JWT_REVOCATIONS_KEY = kit.JWT_REVOCATIONS_KEY
JWT_REVOCATIONS_URL = kit.JWT_REVOCATIONS_URL
JWT_REVOCATIONS_POLL_SECONDS = kit.JWT_REVOCATIONS_POLL_SECONDS
JWT_REVOCATIONS_RECONCILE_SECONDS = kit.JWT_REVOCATIONS_RECONCILE_SECONDS
ATRIUM_OUTBOX_RELAY = kit.ATRIUM_OUTBOX_RELAY
ATRIUM_OUTBOX_RELAY_INTERVAL = kit.ATRIUM_OUTBOX_RELAY_INTERVAL
ATRIUM_OUTBOX_POLL_SECONDS = kit.ATRIUM_OUTBOX_POLL_SECONDS
ATRIUM_OUTBOX_BATCH = kit.ATRIUM_OUTBOX_BATCH
ATRIUM_OUTBOX_RETENTION_DAYS = kit.ATRIUM_OUTBOX_RETENTION_DAYS
JWT_VERIFIED_CACHE_SIZE = kit.JWT_VERIFIED_CACHE_SIZE
JWT_VERIFIED_CACHE_SECONDS = kit.JWT_VERIFIED_CACHE_SECONDS
ATRIUM_CLIENT_ID = kit.ATRIUM_CLIENT_ID
ATRIUM_CLIENT_SECRET = kit.ATRIUM_CLIENT_SECRET
ATRIUM_TOKEN_URL = kit.ATRIUM_TOKEN_URL
ATRIUM_PORTAL_URL = kit.ATRIUM_PORTAL_URL
ATRIUM_PUBLIC_URL = kit.ATRIUM_PUBLIC_URL
ATRIUM_MANIFEST = kit.ATRIUM_MANIFEST
ATRIUM_CATALOG_REGISTER = kit.ATRIUM_CATALOG_REGISTER
ATRIUM_CATALOG_HEARTBEAT_SECONDS = kit.ATRIUM_CATALOG_HEARTBEAT_SECONDS
ATRIUM_OUTBOUND_ALLOW_NETWORKS = kit.ATRIUM_OUTBOUND_ALLOW_NETWORKS
JOBS_TRACKING = kit.JOBS_TRACKING
JOBS_STREAM = kit.JOBS_STREAM
JOBS_REDIS_URL = kit.JOBS_REDIS_URL
JOBS_STREAM_MAXLEN = kit.JOBS_STREAM_MAXLEN
JOBS_TRACKING_FLUSH_SECONDS = kit.JOBS_TRACKING_FLUSH_SECONDS
JOBS_TRACKING_BATCH = kit.JOBS_TRACKING_BATCH
JOBS_TRACKING_BUFFER_MAX = kit.JOBS_TRACKING_BUFFER_MAX
JOBS_WORKER_HEARTBEAT_SECONDS = kit.JOBS_WORKER_HEARTBEAT_SECONDS
CELERY_BROKER_URL = kit.CELERY_BROKER_URL
CELERY_RESULT_BACKEND = kit.CELERY_RESULT_BACKEND
CELERY_IMPORTS = kit.CELERY_IMPORTS
CELERY_TASK_TIME_LIMIT = kit.CELERY_TASK_TIME_LIMIT
CELERY_TASK_SOFT_TIME_LIMIT = kit.CELERY_TASK_SOFT_TIME_LIMIT
CELERY_RESULT_EXPIRES = kit.CELERY_RESULT_EXPIRES
CELERY_BROKER_TRANSPORT_OPTIONS = kit.CELERY_BROKER_TRANSPORT_OPTIONS
CELERY_WORKER_CONCURRENCY = kit.CELERY_WORKER_CONCURRENCY
REDIS_URL = kit.REDIS_URL
LOGGING = kit.LOGGING
SECURE_CONTENT_TYPE_NOSNIFF = kit.SECURE_CONTENT_TYPE_NOSNIFF
X_FRAME_OPTIONS = kit.X_FRAME_OPTIONS
SESSION_COOKIE_HTTPONLY = kit.SESSION_COOKIE_HTTPONLY
SECURE_PROXY_SSL_HEADER = kit.SECURE_PROXY_SSL_HEADER
SECURE_SSL_REDIRECT = kit.SECURE_SSL_REDIRECT
SECURE_REDIRECT_EXEMPT = kit.SECURE_REDIRECT_EXEMPT
SECURE_HSTS_SECONDS = kit.SECURE_HSTS_SECONDS
SECURE_HSTS_INCLUDE_SUBDOMAINS = kit.SECURE_HSTS_INCLUDE_SUBDOMAINS
SECURE_HSTS_PRELOAD = kit.SECURE_HSTS_PRELOAD
SESSION_COOKIE_SECURE = kit.SESSION_COOKIE_SECURE
CSRF_COOKIE_SECURE = kit.CSRF_COOKIE_SECURE
CSRF_TRUSTED_ORIGINS = kit.CSRF_TRUSTED_ORIGINS
AUTHENTICATION_BACKENDS = kit.AUTHENTICATION_BACKENDS
AXES_ENABLED = kit.AXES_ENABLED
AXES_HANDLER = kit.AXES_HANDLER
AXES_FAILURE_LIMIT = kit.AXES_FAILURE_LIMIT
AXES_COOLOFF_TIME = kit.AXES_COOLOFF_TIME
AXES_LOCKOUT_PARAMETERS = kit.AXES_LOCKOUT_PARAMETERS
AXES_RESET_ON_SUCCESS = kit.AXES_RESET_ON_SUCCESS
AXES_CLIENT_IP_CALLABLE = kit.AXES_CLIENT_IP_CALLABLE
AXES_LOCKOUT_CALLABLE = kit.AXES_LOCKOUT_CALLABLE
ATRIUM_PROXY_COUNT = kit.ATRIUM_PROXY_COUNT
AXES_DISABLE_ACCESS_LOG = kit.AXES_DISABLE_ACCESS_LOG
AXES_ENABLE_ADMIN = kit.AXES_ENABLE_ADMIN
AXES_VERBOSE = kit.AXES_VERBOSE

# Users use the admin session; machine clients use portal-issued JWTs (audience "portal").
REST_FRAMEWORK = {
    **kit.REST_FRAMEWORK,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # The kit's, plus the caller's client status on every write (portal/identity/authentication.py).
        "portal.identity.authentication.PortalJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["portal.identity.permissions.RoleOrScope"],
    "DEFAULT_PARSER_CLASSES": ["services.kit.parsers.StrictJSONParser", "rest_framework.parsers.FormParser"],
}

# The portal verifies its own tokens (audience "portal") against its own key set, in process.
JWT_JWKS_PROVIDER = "portal.identity.keys.jwks"
# ... and reads revocations from its own database when Redis cannot tell (mending Redis on the way).
JWT_REVOCATIONS_PROVIDER = "portal.identity.revocations.revocations_reconcile"

# Token signing (identity provider). PEM from the environment, or a file; dev and
# test generate an Ed25519 key once under var/keys/.
JWT_PRIVATE_KEY = env.str("JWT_PRIVATE_KEY", default="", multiline=True)
JWT_PRIVATE_KEY_FILE = env.str("JWT_PRIVATE_KEY_FILE", default="")
# Public keys of retired signing keys, still published in the JWKS during rotation.
JWT_RETIRED_PUBLIC_KEY_FILES = env.list("JWT_RETIRED_PUBLIC_KEY_FILES", default=[])
JWT_ACCESS_TOKEN_TTL_SECONDS = env.int("JWT_ACCESS_TOKEN_TTL_SECONDS", default=900)
# After a machine client's secret is rotated, the old one still obtains tokens this long (0: not at all).
ATRIUM_CLIENT_SECRET_GRACE_SECONDS = env.int("ATRIUM_CLIENT_SECRET_GRACE_SECONDS", default=3600)
# Token endpoint: this many failed secrets for one client id within the window lock it out for the cool-off
# (429 too_many_attempts, even with the right secret; portal/identity/throttle.py). 0 turns throttling off.
ATRIUM_TOKEN_FAILURE_LIMIT = env.int("ATRIUM_TOKEN_FAILURE_LIMIT", default=10)
ATRIUM_TOKEN_FAILURE_WINDOW_SECONDS = env.int("ATRIUM_TOKEN_FAILURE_WINDOW_SECONDS", default=300)
ATRIUM_TOKEN_LOCKOUT_SECONDS = env.int("ATRIUM_TOKEN_LOCKOUT_SECONDS", default=900)

# What a machine client may be granted: audience → the scopes that audience knows.
ATRIUM_AUDIENCE_SCOPES = {
    # identity:manage: create, rotate, revoke and unlock machine clients (only within the caller's own grants).
    "portal": [
        "portal:read",
        "portal:write",
        "catalog:register",
        "audit:read",
        "audit:ingest",  # POST /api/v1/audit/events:ingest: a service's audit events over HTTP (docs/audit.md)
        "jobs:read",
        "jobs:write",
        "identity:manage",
    ],
    "ledger": ["ledger:read", "ledger:write"],
    "payments": ["payments:read", "payments:write"],
    "webhooks": ["webhooks:read", "webhooks:write"],
    "risk": ["risk:read", "risk:assess", "risk:write"],
}

LOGIN_URL = "admin:login"

# OpenID Connect provider for people (django-oauth-toolkit; docs/sso.md): authorization code with PKCE (required),
# ID tokens signed RS256 with OIDC_PRIVATE_KEY (PEM) or OIDC_PRIVATE_KEY_FILE — required in production; dev and
# test generate an RSA key once under var/keys/ (the kit's one key loader, services/kit/keys.py).
OIDC_PRIVATE_KEY = env.str("OIDC_PRIVATE_KEY", default="", multiline=True)
OIDC_PRIVATE_KEY_FILE = env.str("OIDC_PRIVATE_KEY_FILE", default="")
OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "PKCE_REQUIRED": True,
    # Production without a key: empty, and the system check identity.E002 refuses to start.
    "OIDC_RSA_PRIVATE_KEY": private_pem_read(
        pem=OIDC_PRIVATE_KEY,
        filename=OIDC_PRIVATE_KEY_FILE,
        environment=ATRIUM_ENV,
        dev_path=ATRIUM_VAR_DIR / "keys" / "oidc-signing-rsa.pem",
        names=("OIDC_PRIVATE_KEY", "OIDC_PRIVATE_KEY_FILE"),
        kind="rsa",
    ).decode()
    if OIDC_PRIVATE_KEY or OIDC_PRIVATE_KEY_FILE or ATRIUM_ENV != "production"
    else "",
    # The issuer (the ID token's ``iss``): the portal's public URL; empty: derived from the request.
    "OIDC_ISS_ENDPOINT": env.str("OIDC_ISSUER", default=""),
    "OAUTH2_VALIDATOR_CLASS": "portal.identity.oidc.AtriumOIDCValidator",
    "SCOPES": {
        "openid": "Sign in with your portal identity",
        "profile": "Your username, name and portal roles",
        "email": "Your e-mail address",
    },
    "DEFAULT_SCOPES": ["openid"],
    # Services' sign-ins are short: a refresh re-asks the portal (docs/sso.md) instead of a long-lived token.
    "ACCESS_TOKEN_EXPIRE_SECONDS": 300,
    "ID_TOKEN_EXPIRE_SECONDS": 300,
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"] if ATRIUM_ENV == "production" else ["http", "https"],
    "ALLOWED_SCHEMES": ["https"] if ATRIUM_ENV == "production" else ["http", "https"],
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    "OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT": False,
    "OIDC_RP_INITIATED_LOGOUT_STRICT_REDIRECT_URIS": True,
    # The OAuth 2.0 Security BCP (RFC 9700) now rather than at the library's 4.0: no implicit or password grant,
    # S256 only, no tokens in query strings, ``iss`` in the authorization response, tokens stored hashed,
    # refresh-token replay detected; `check --deploy` reports any backsliding.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": ATRIUM_ENV == "production",
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
}
# Secrets shown once must never ride in a (signed, not encrypted) cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# Audit trail: the Ed25519 key that signs tree heads (PEM, or a file; dev/test generate one under
# var/keys/), the append-only JSONL copy of every signed head outside the database, retention.
AUDIT_SIGNING_KEY = env.str("AUDIT_SIGNING_KEY", default="", multiline=True)
AUDIT_SIGNING_KEY_FILE = env.str("AUDIT_SIGNING_KEY_FILE", default="")
# Public keys (PEM files) of retired audit signing keys: heads and archives they signed still verify. Keep them
# for as long as the trail must verify, i.e. always (docs/deploy.md, rotation).
AUDIT_RETIRED_PUBLIC_KEY_FILES = env.list("AUDIT_RETIRED_PUBLIC_KEY_FILES", default=[])
AUDIT_HEADS_PATH = env.str("AUDIT_HEADS_PATH", default=str(ATRIUM_VAR_DIR / "audit" / "heads.jsonl"))
# Where signed heads go outside the database: "" = the file above, file:///abs/path.jsonl, or
# s3://bucket/prefix (production: a bucket with Object Lock, COMPLIANCE mode; see docs/audit.md).
AUDIT_HEADS_SINK = env.str("AUDIT_HEADS_SINK", default="")
AUDIT_HEADS_S3_ENDPOINT_URL = env.str("AUDIT_HEADS_S3_ENDPOINT_URL", default=None)
AUDIT_HEADS_S3_REGION = env.str("AUDIT_HEADS_S3_REGION", default="us-east-1")
AUDIT_HEADS_S3_OBJECT_LOCK_MODE = env.str("AUDIT_HEADS_S3_OBJECT_LOCK_MODE", default="")
AUDIT_HEADS_S3_RETENTION_DAYS = env.int("AUDIT_HEADS_S3_RETENTION_DAYS", default=400)
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=365)
AUDIT_ARCHIVE_DIR = env.str("AUDIT_ARCHIVE_DIR", default=str(ATRIUM_VAR_DIR / "audit" / "archive"))
# The hourly beat task audit.archive archives by itself only when this is on (the directory must be durable).
AUDIT_ARCHIVE_AUTOMATIC = env.bool("AUDIT_ARCHIVE_AUTOMATIC", default=False)
# Poison isolation in the sequencer: an event that fails alone for no known reason is tried this many times in
# all, then parked in its place (portal/audit/parked.py).
AUDIT_INGEST_ATTEMPTS = env.int("AUDIT_INGEST_ATTEMPTS", default=3)
# audit_verify: a jump in a service's sequence over more numbers than this cannot be events still in flight
# (the relays deliver in order, in batches): it is reported as tampering, not as a gap.
AUDIT_VERIFY_SERVICE_GAP_MAX = env.int("AUDIT_VERIFY_SERVICE_GAP_MAX", default=10_000_000)

# Service catalog: instances heartbeat this often (each heartbeat's answer says so); one that misses three is
# critical, one silent this long is gone (kept). Health checks: timeout, how many at once, when 2xx is "slow".
CATALOG_HEARTBEAT_SECONDS = env.int("CATALOG_HEARTBEAT_SECONDS", default=10)
CATALOG_INSTANCE_GONE_SECONDS = env.int("CATALOG_INSTANCE_GONE_SECONDS", default=3600)
CATALOG_HEALTH_TIMEOUT = env.float("CATALOG_HEALTH_TIMEOUT", default=3.0)
CATALOG_HEALTH_CONCURRENCY = env.int("CATALOG_HEALTH_CONCURRENCY", default=8)
CATALOG_HEALTH_SLOW_MS = env.int("CATALOG_HEALTH_SLOW_MS", default=1000)
# Single health checks are kept this long, then folded into hourly counts (uptime over 30 days keeps working).
CATALOG_HEALTH_RAW_DAYS = env.float("CATALOG_HEALTH_RAW_DAYS", default=2.0)
# Uptime is measured over the time checks covered: a check covers the time to the next, at most this many of its
# service's check intervals (a longer gap, e.g. the stack stopped, is unknown time, neither up nor down).
CATALOG_UPTIME_GAP_INTERVALS = env.float("CATALOG_UPTIME_GAP_INTERVALS", default=3.0)
# A dependency counts as observed if a call was reported in this many days.
CATALOG_OBSERVED_DAYS = env.float("CATALOG_OBSERVED_DAYS", default=7.0)
# Job dashboard: the tracking stream every process appends to and the monitor reads
# (portal/jobs, services/kit/tracking.py).
# (The stream's settings are every process's: services/kit/conf.py.)
JOBS_MONITOR_BATCH = env.int("JOBS_MONITOR_BATCH", default=20)  # stream entries (each a batch of events)
JOBS_MONITOR_CONSUMER = env.str("JOBS_MONITOR_CONSUMER", default="")  # default: the host name
JOBS_MONITOR_GATHER_SECONDS = env.float("JOBS_MONITOR_GATHER_SECONDS", default=0.5)
JOBS_MONITOR_CLAIM_SECONDS = env.float("JOBS_MONITOR_CLAIM_SECONDS", default=60.0)
# An event that fails alone for no known reason is tried this many times in all, then parked (jobs_deadletter).
JOBS_MONITOR_ATTEMPTS = env.int("JOBS_MONITOR_ATTEMPTS", default=3)
# Retention (portal.jobs_prune, hourly): tasks and their events, then the per-minute chart counts; deleted in
# batches of JOBS_PRUNE_BATCH rows, for at most JOBS_PRUNE_SECONDS a run (under the task time limit).
JOBS_RETENTION_DAYS = env.int("JOBS_RETENTION_DAYS", default=30)
JOBS_AGGREGATE_DAYS = env.int("JOBS_AGGREGATE_DAYS", default=400)
JOBS_PRUNE_BATCH = env.int("JOBS_PRUNE_BATCH", default=5_000)
JOBS_PRUNE_SECONDS = env.float("JOBS_PRUNE_SECONDS", default=240.0)
# A bulk retry from the dashboard publishes at most this many tasks (more matching: 409 too_many_jobs).
JOBS_RETRY_MAX = env.int("JOBS_RETRY_MAX", default=500)
# The payments service, as the home reads it (GET /api/v1/payments/stats, with the portal's machine identity).
PAYMENTS_URL = env.str("PAYMENTS_URL", default="http://127.0.0.1:8002")
# The webhooks service, as the trace reads it (a payment's messages and their attempts, with the portal's machine
# identity: audience webhooks, scope webhooks:read).
WEBHOOKS_URL = env.str("WEBHOOKS_URL", default="http://127.0.0.1:8003")
# The home asks for the last hour's payments at every refresh, for the last day's (a day of rows) at most this often.
HOME_PAYMENTS_DAY_SECONDS = env.int("HOME_PAYMENTS_DAY_SECONDS", default=60)
# How often the catalog pages refresh their live region (seconds; ?refresh=N on a page overrides it).
CATALOG_PAGE_REFRESH_SECONDS = env.int("CATALOG_PAGE_REFRESH_SECONDS", default=5)

# Origins whose pages may call the token endpoint from a browser: the services' API docs (/api/docs), whose
# "Authorize" gets a token from a client id and secret (docs/api.md). Default: the ledger's, payments' and webhooks'
# URLs (`make up` sets LEDGER_URL, PAYMENTS_URL and WEBHOOKS_URL).
ATRIUM_TOKEN_CORS_ORIGINS = env.list(
    "ATRIUM_TOKEN_CORS_ORIGINS",
    default=[
        f"{url.scheme}://{url.netloc}"
        for url in (urlsplit(env.str(f"{name}_URL", default="")) for name in ("LEDGER", "PAYMENTS", "WEBHOOKS"))
        if url.scheme and url.netloc
    ],
)
