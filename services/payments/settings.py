"""Settings for the payments service (database: PAYMENTS_DATABASE_URL or DATABASE_URL)."""

from pathlib import Path

from services.kit.conf import env, kit_settings, sso_client_settings

BASE_DIR = Path(__file__).resolve().parent

kit = kit_settings(
    service="payments",
    root_urlconf="services.payments.urls",
    wsgi_application="services.payments.wsgi.application",
    apps=["services.payments"],
    celery_imports=["workers.payments"],
)
# People sign in to this admin at the portal (OpenID Connect; services/kit/sso.py, docs/sso.md); the portal's
# roles map to this service's permissions in services/payments/roles.py.
sso = sso_client_settings(service="payments", roles="services.payments.roles.ROLE_RULES", kit=kit)

# Shared by every process (services/kit/conf.py: KitSettings), each by name.
ATRIUM_SERVICE = kit.ATRIUM_SERVICE
ATRIUM_ENV = kit.ATRIUM_ENV
ATRIUM_VAR_DIR = kit.ATRIUM_VAR_DIR
DEBUG = kit.DEBUG
SECRET_KEY = kit.SECRET_KEY
ALLOWED_HOSTS = kit.ALLOWED_HOSTS
INSTALLED_APPS = kit.INSTALLED_APPS
MIDDLEWARE = sso.MIDDLEWARE  # the kit's, then the sign-in refresh (below)
ROOT_URLCONF = kit.ROOT_URLCONF
WSGI_APPLICATION = kit.WSGI_APPLICATION
TEMPLATES = kit.TEMPLATES
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
ATRIUM_MAX_JSON_DEPTH = kit.ATRIUM_MAX_JSON_DEPTH
REST_FRAMEWORK = kit.REST_FRAMEWORK
SPECTACULAR_SETTINGS = kit.SPECTACULAR_SETTINGS
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
AUTHENTICATION_BACKENDS = sso.AUTHENTICATION_BACKENDS  # the kit's, then the portal sign-in (below)
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

# Sign-in through the portal (services/kit/conf.py: SSOSettings), each by name.
OIDC_RP_CLIENT_ID = sso.OIDC_RP_CLIENT_ID
OIDC_RP_CLIENT_SECRET = sso.OIDC_RP_CLIENT_SECRET
OIDC_OP_AUTHORIZATION_ENDPOINT = sso.OIDC_OP_AUTHORIZATION_ENDPOINT
OIDC_OP_TOKEN_ENDPOINT = sso.OIDC_OP_TOKEN_ENDPOINT
OIDC_OP_USER_ENDPOINT = sso.OIDC_OP_USER_ENDPOINT
OIDC_OP_JWKS_ENDPOINT = sso.OIDC_OP_JWKS_ENDPOINT
OIDC_RP_SIGN_ALGO = sso.OIDC_RP_SIGN_ALGO
OIDC_RP_SCOPES = sso.OIDC_RP_SCOPES
OIDC_USE_PKCE = sso.OIDC_USE_PKCE
OIDC_TIMEOUT = sso.OIDC_TIMEOUT
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = sso.OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS
OIDC_AUTHENTICATION_CALLBACK_URL = sso.OIDC_AUTHENTICATION_CALLBACK_URL
LOGIN_REDIRECT_URL = sso.LOGIN_REDIRECT_URL
LOGIN_REDIRECT_URL_FAILURE = sso.LOGIN_REDIRECT_URL_FAILURE
LOGOUT_REDIRECT_URL = sso.LOGOUT_REDIRECT_URL
SESSION_COOKIE_NAME = sso.SESSION_COOKIE_NAME
CSRF_COOKIE_NAME = sso.CSRF_COOKIE_NAME
ATRIUM_SSO_ROLES = sso.ATRIUM_SSO_ROLES
ATRIUM_SSO_BREAKGLASS_MINUTES = sso.ATRIUM_SSO_BREAKGLASS_MINUTES

# The ledger, reached over HTTP with this service's own machine credentials (PAYMENTS_CLIENT_ID / _SECRET).
LEDGER_URL = env.str("LEDGER_URL", default="http://127.0.0.1:8001")
# One ledger call (services/payments/ledger.py: call_seconds) — every try timing out, with the waits between
# them — must end well within PAYMENTS_LEASE_SECONDS, or a live worker could lose its lease in the middle of it
# (system check payments.E003). A call that fails after its retries is not lost: the payments wait and are
# tried again (PAYMENTS_RETRY_*).
PAYMENTS_LEDGER_TIMEOUT = env.float("PAYMENTS_LEDGER_TIMEOUT", default=3.0)
PAYMENTS_LEDGER_RETRIES = env.int("PAYMENTS_LEDGER_RETRIES", default=1)  # within one attempt; attempts below
# The risk service (services/risk, docs/payments.md "Risk screening"), called once per screening batch with this
# service's machine credentials (audience risk). Empty: no risk screening, the admin's rules only (as before it
# existed). While risk cannot be reached PAYMENTS_RISK_FALLBACK decides: hold (the payments wait in screening and
# are tried again, never lost), allow (the admin's rules only) or deny (rejected, risk_unavailable); any other
# value is refused at start (system check payments.E004). One risk call (every try) must end within the lease
# (payments.E005).
RISK_URL = env.str("RISK_URL", default="")
PAYMENTS_RISK_FALLBACK = env.str("PAYMENTS_RISK_FALLBACK", default="hold")
PAYMENTS_RISK_TIMEOUT = env.float("PAYMENTS_RISK_TIMEOUT", default=2.0)
PAYMENTS_RISK_RETRIES = env.int("PAYMENTS_RISK_RETRIES", default=1)
# Request body limit (413 payload_too_large above it, chunked bodies included): a payment is at most ~170 KB of
# JSON (metadata at its limits, every character escaped); 256 KiB leaves room and refuses anything larger.
ATRIUM_MAX_BODY_BYTES = DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("ATRIUM_MAX_BODY_BYTES", default=256 * 1024)
# Currencies payments accept: a subset of the kit's ISO 4217 list (services/kit/currencies.py; a system check
# refuses any other code).
PAYMENTS_CURRENCIES = env.list(
    "PAYMENTS_CURRENCIES", default=["EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "JPY", "CAD", "AUD"]
)
# The largest amount a payment may be created with, in minor units (422 amount_too_large above it): a hard cap
# against absurd amounts, before any screening rule. PAYMENTS_MAX_AMOUNTS overrides it per currency, e.g.
# "JPY=100000000000,KWD=1000000000". (Screening's currency limits, edited in the admin, come on top.)
PAYMENTS_MAX_AMOUNT = env.int("PAYMENTS_MAX_AMOUNT", default=1_000_000_000_000)
PAYMENTS_MAX_AMOUNTS = env.dict("PAYMENTS_MAX_AMOUNTS", cast={"value": int}, default={})
# Idempotency keys: kept this long; an in-flight key whose request died is taken over after the lock.
PAYMENTS_IDEMPOTENCY_TTL_HOURS = env.int("PAYMENTS_IDEMPOTENCY_TTL_HOURS", default=24)
PAYMENTS_IDEMPOTENCY_LOCK_SECONDS = env.int("PAYMENTS_IDEMPOTENCY_LOCK_SECONDS", default=60)
# Processing: a worker leases a payment while it works on it, renewing the lease between the steps of a batch;
# a killed worker's payments are taken over when its lease runs out (by the next drain, or the sweeper within
# its 5 s). Attempts that meet an unavailable ledger are retried with exponential backoff and jitter (base
# doubling up to the max), then the payment fails.
PAYMENTS_LEASE_SECONDS = env.float("PAYMENTS_LEASE_SECONDS", default=15.0)
PAYMENTS_MAX_ATTEMPTS = env.int("PAYMENTS_MAX_ATTEMPTS", default=40)
PAYMENTS_RETRY_BASE_SECONDS = env.float("PAYMENTS_RETRY_BASE_SECONDS", default=1.0)
PAYMENTS_RETRY_MAX_SECONDS = env.float("PAYMENTS_RETRY_MAX_SECONDS", default=60.0)
# Workers claim due payments in batches of up to PAYMENTS_BATCH; at most PAYMENTS_DRAINERS drain at once, each for
# up to PAYMENTS_DRAIN_SECONDS per task. A web process wakes them at most once per PAYMENTS_KICK_DELAY seconds
# (0: a message per payment created).
PAYMENTS_BATCH = env.int("PAYMENTS_BATCH", default=200)
PAYMENTS_DRAINERS = env.int("PAYMENTS_DRAINERS", default=2)
PAYMENTS_DRAIN_SECONDS = env.float("PAYMENTS_DRAIN_SECONDS", default=20.0)
PAYMENTS_KICK_DELAY = env.float("PAYMENTS_KICK_DELAY", default=0.1)
# After a batch smaller than PAYMENTS_BATCH a drain waits this long before its next claim, so that batches gather.
PAYMENTS_DRAIN_GATHER = env.float("PAYMENTS_DRAIN_GATHER", default=0.1)
# The sweeper resumes open payments untouched for this long whose worker is gone (no lease, no retry due), and
# at once those whose lease ran out (a worker died holding them).
PAYMENTS_STALE_SECONDS = env.int("PAYMENTS_STALE_SECONDS", default=30)
# A payment that meets an unexpected error in a batch is taken out of it and processed alone (payments.process),
# with backoff; after this many unexpected errors it is parked: failed with processing_error, its hold voided.
PAYMENTS_PROCESSING_ATTEMPTS = env.int("PAYMENTS_PROCESSING_ATTEMPTS", default=3)
# Reconciliation against the ledger: payments created in this window (ending a minute ago).
PAYMENTS_RECONCILE_WINDOW_HOURS = env.int("PAYMENTS_RECONCILE_WINDOW_HOURS", default=48)

# Outbox topics: audit events to the portal; payment domain events (payment.<status>) to the webhooks service.
ATRIUM_OUTBOX_TOPICS = {"audit": "audit.ingest", "events": "webhooks.ingest"}
