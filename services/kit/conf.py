"""Settings shared by every Atrium Django project, read from the environment.

Each project's ``settings.py`` calls :func:`kit_settings`, which returns a :class:`KitSettings`, assigns
every one of its fields by name (``DEBUG = kit.DEBUG``: each setting can be found with grep and checked by
linters), then states what is particular to it. Environment (12-factor):

``ATRIUM_ENV``
    ``production`` (default), ``dev`` or ``test``. Production refuses to start
    without real secrets; dev and test get safe local defaults.
``<SERVICE>_DATABASE_URL`` / ``DATABASE_URL``
    The process's own PostgreSQL database (the service-specific name wins).
``REDIS_URL``
    Celery broker and result backend.
``SECRET_KEY``, ``ALLOWED_HOSTS``, ``DEBUG``, ``LOG_LEVEL``
    As in Django; ``DEBUG`` is off unless ``ATRIUM_ENV=dev``.
``JWT_ISSUER``, ``JWT_JWKS_URL``
    Where services fetch the portal's public keys from.
``ATRIUM_OUTBOUND_ALLOW_NETWORKS``
    Networks (CIDRs) that requests to URLs others chose may reach besides public addresses.
``AXES_*``, ``ATRIUM_PROXY_COUNT``
    Throttled admin logins (:func:`login_throttle_settings`, docs/logins.md).
``JWT_REVOCATIONS_URL``
    Where services read revoked clients when Redis cannot tell (default: next to ``JWT_JWKS_URL``).
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from django.conf import global_settings
from django.core.exceptions import ImproperlyConfigured

ENVIRONMENTS = ("production", "dev", "test")
REPO_ROOT = Path(__file__).resolve().parents[2]

env = environ.Env()

# A dev/test-only key: long and random-looking so `check --deploy` judges the
# production path, never this one (production has no default at all).
_LOCAL_SECRET_KEY = "dev-only-insecure-7b1f0c9e4a2d8f6b3e5c1a9d7f2b4e6c8a0d2f4b6e8c0a2d4f6b8e0c2a4d6f8b"


def atrium_env() -> str:
    """Return the deployment environment name, validated."""
    value = env.str("ATRIUM_ENV", default="production")
    if value not in ENVIRONMENTS:
        raise ImproperlyConfigured(f"ATRIUM_ENV must be one of {ENVIRONMENTS}, got {value!r}")
    return value


def database_url_for(service: str) -> str:
    """Return the database URL for ``service`` (``<SERVICE>_DATABASE_URL`` wins over ``DATABASE_URL``)."""
    specific = f"{service.upper()}_DATABASE_URL"
    url = env.str(specific, default="") or env.str("DATABASE_URL", default="")
    if not url:
        raise ImproperlyConfigured(
            f"Set {specific} or DATABASE_URL to this process's PostgreSQL database "
            "(`make up` and `make test` set it for you)."
        )
    if not url.startswith(("postgres://", "postgresql://", "pgsql://")):
        raise ImproperlyConfigured(f"{specific}/DATABASE_URL must be a PostgreSQL URL")
    return url


def _database(service: str) -> dict[str, Any]:
    config = env.db_url_config(database_url_for(service))
    config["ENGINE"] = "django.db.backends.postgresql"
    options = config.setdefault("OPTIONS", {})
    options.setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5))
    options.setdefault("application_name", f"atrium-{service}")
    if atrium_env() == "test":
        # The test runner empties tables between tests; audit tables refuse TRUNCATE unless this is set.
        options.setdefault("options", "-c atrium.audit_truncate=on")
    config["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    config["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True)
    config["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="") or None}
    return config


def outbound_allow_networks() -> list[str]:
    """``ATRIUM_OUTBOUND_ALLOW_NETWORKS``: comma-separated CIDRs (``127.0.0.1/32,10.0.0.0/8``), checked here so
    a typo stops the process instead of silently allowing nothing (or more than meant)."""
    networks = []
    for value in env.list("ATRIUM_OUTBOUND_ALLOW_NETWORKS", default=[]):
        try:
            networks.append(str(ipaddress.ip_network(value.strip())))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"ATRIUM_OUTBOUND_ALLOW_NETWORKS: {value!r} is not a network (CIDR, host bits zero): {exc}"
            ) from exc
    return networks


@dataclass(frozen=True)
class KitSettings:
    """The Django settings every Atrium process shares, by their Django names. A project's settings module
    assigns each of them explicitly (``DEBUG = kit.DEBUG``), or its own value instead; a test checks that every
    field is assigned in every settings module."""

    ATRIUM_SERVICE: str
    ATRIUM_ENV: str
    ATRIUM_VAR_DIR: Path
    DEBUG: bool
    SECRET_KEY: str
    ALLOWED_HOSTS: list[str]
    INSTALLED_APPS: list[str]
    MIDDLEWARE: list[str]
    ROOT_URLCONF: str
    WSGI_APPLICATION: str
    TEMPLATES: list[dict[str, Any]]
    DATABASES: dict[str, dict[str, Any]]
    DEFAULT_AUTO_FIELD: str
    AUTH_PASSWORD_VALIDATORS: list[dict[str, Any]]
    PASSWORD_HASHERS: list[str]
    LANGUAGE_CODE: str
    TIME_ZONE: str
    USE_I18N: bool
    USE_TZ: bool
    STATIC_URL: str
    STATIC_ROOT: str | None
    STORAGES: dict[str, dict[str, Any]]
    WHITENOISE_USE_FINDERS: bool
    WHITENOISE_AUTOREFRESH: bool
    DATA_UPLOAD_MAX_MEMORY_SIZE: int
    ATRIUM_MAX_BODY_BYTES: int
    ATRIUM_MAX_JSON_DEPTH: int
    REST_FRAMEWORK: dict[str, Any]
    SPECTACULAR_SETTINGS: dict[str, Any]
    JWT_ISSUER: str
    JWT_AUDIENCE: str
    JWT_JWKS_URL: str
    JWT_JWKS_CACHE_SECONDS: int
    JWT_LEEWAY_SECONDS: int
    JWT_REVOCATIONS_KEY: str
    JWT_REVOCATIONS_URL: str
    JWT_REVOCATIONS_POLL_SECONDS: float
    JWT_REVOCATIONS_RECONCILE_SECONDS: float
    ATRIUM_OUTBOX_RELAY: str
    ATRIUM_OUTBOX_RELAY_INTERVAL: float
    ATRIUM_OUTBOX_POLL_SECONDS: float
    ATRIUM_OUTBOX_BATCH: int
    ATRIUM_OUTBOX_RETENTION_DAYS: int
    JWT_VERIFIED_CACHE_SIZE: int
    JWT_VERIFIED_CACHE_SECONDS: int
    ATRIUM_CLIENT_ID: str
    ATRIUM_CLIENT_SECRET: str
    ATRIUM_TOKEN_URL: str
    ATRIUM_PORTAL_URL: str
    ATRIUM_PUBLIC_URL: str
    ATRIUM_MANIFEST: str
    ATRIUM_CATALOG_REGISTER: bool
    ATRIUM_CATALOG_HEARTBEAT_SECONDS: float
    ATRIUM_OUTBOUND_ALLOW_NETWORKS: list[str]
    JOBS_TRACKING: bool
    JOBS_STREAM: str
    JOBS_REDIS_URL: str
    JOBS_STREAM_MAXLEN: int
    JOBS_TRACKING_FLUSH_SECONDS: float
    JOBS_TRACKING_BATCH: int
    JOBS_TRACKING_BUFFER_MAX: int
    JOBS_WORKER_HEARTBEAT_SECONDS: float
    CELERY_BROKER_URL: str
    CELERY_RESULT_BACKEND: str
    CELERY_IMPORTS: list[str]
    CELERY_TASK_TIME_LIMIT: int
    CELERY_TASK_SOFT_TIME_LIMIT: int
    CELERY_RESULT_EXPIRES: int
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any]
    CELERY_WORKER_CONCURRENCY: int
    REDIS_URL: str
    LOGGING: dict[str, Any]
    SECURE_CONTENT_TYPE_NOSNIFF: bool
    X_FRAME_OPTIONS: str
    SESSION_COOKIE_HTTPONLY: bool
    SECURE_PROXY_SSL_HEADER: tuple[str, str] | None
    SECURE_SSL_REDIRECT: bool
    SECURE_REDIRECT_EXEMPT: list[str]
    SECURE_HSTS_SECONDS: int
    SECURE_HSTS_INCLUDE_SUBDOMAINS: bool
    SECURE_HSTS_PRELOAD: bool
    SESSION_COOKIE_SECURE: bool
    CSRF_COOKIE_SECURE: bool
    CSRF_TRUSTED_ORIGINS: list[str]
    AUTHENTICATION_BACKENDS: list[str]
    AXES_ENABLED: bool
    AXES_HANDLER: str
    AXES_FAILURE_LIMIT: int
    AXES_COOLOFF_TIME: timedelta | None
    AXES_LOCKOUT_PARAMETERS: list[str]
    AXES_RESET_ON_SUCCESS: bool
    AXES_CLIENT_IP_CALLABLE: str
    AXES_LOCKOUT_CALLABLE: str
    ATRIUM_PROXY_COUNT: int
    AXES_DISABLE_ACCESS_LOG: bool
    AXES_ENABLE_ADMIN: bool
    AXES_VERBOSE: bool


def kit_settings(
    *,
    service: str,
    root_urlconf: str,
    wsgi_application: str,
    apps: list[str],
    celery_imports: list[str] | None = None,
) -> KitSettings:
    """Return the Django settings every Atrium process shares (every project has an admin, behind throttled logins).

    ``service`` names the process (``portal``, ``ledger``, ``payments``): it is
    the JWT audience, the metrics label, the log field and the database prefix.
    """
    environment = atrium_env()
    production = environment == "production"
    debug = env.bool("DEBUG", default=environment == "dev")
    if production and debug:
        raise ImproperlyConfigured("DEBUG must be off when ATRIUM_ENV=production")

    if production:
        secret_key = env.str("SECRET_KEY", default="")
        if not secret_key:
            raise ImproperlyConfigured("SECRET_KEY is required when ATRIUM_ENV=production")
        allowed_hosts = env.list("ALLOWED_HOSTS", default=[])
        if not allowed_hosts:
            raise ImproperlyConfigured("ALLOWED_HOSTS is required when ATRIUM_ENV=production")
    else:
        secret_key = env.str("SECRET_KEY", default=f"{_LOCAL_SECRET_KEY}-{service}")
        allowed_hosts = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

    redis_url = env.str("REDIS_URL", default="")
    if not redis_url and environment != "test":
        raise ImproperlyConfigured("Set REDIS_URL (`make up` sets it for you); Celery never runs tasks eagerly")
    broker_url = env.str("CELERY_BROKER_URL", default=redis_url)
    var_dir = Path(env.str("ATRIUM_VAR_DIR", default=str(REPO_ROOT / "var")))

    contrib = [
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
    ]

    settings: dict[str, Any] = {
        "ATRIUM_SERVICE": service,
        "ATRIUM_ENV": environment,
        "ATRIUM_VAR_DIR": var_dir,
        "DEBUG": debug,
        "SECRET_KEY": secret_key,
        "ALLOWED_HOSTS": allowed_hosts,
        "INSTALLED_APPS": [
            *contrib,
            "rest_framework",
            "django_filters",
            "drf_spectacular",
            "drf_spectacular_sidecar",
            "services.kit",
            *apps,
            "axes",  # throttled admin logins: see login_throttle_settings
        ],
        "MIDDLEWARE": [
            "services.kit.middleware.RequestIdMiddleware",
            "services.kit.middleware.MetricsMiddleware",
            "services.kit.querystring.QueryStringCheckMiddleware",
            "django.middleware.security.SecurityMiddleware",
            "whitenoise.middleware.WhiteNoiseMiddleware",
            "services.kit.canonical_urls.CanonicalPathMiddleware",  # 308 for the slashed spelling, body unread
            "services.kit.middleware.BodySizeLimitMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
            "axes.middleware.AxesMiddleware",  # last: it turns a lockout into a 429
        ],
        "ROOT_URLCONF": root_urlconf,
        "WSGI_APPLICATION": wsgi_application,
        "TEMPLATES": [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [],
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ],
                },
            }
        ],
        "DATABASES": {"default": _database(service)},
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "AUTH_PASSWORD_VALIDATORS": [
            {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
            {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
            {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
            {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
        ],
        "PASSWORD_HASHERS": (
            ["django.contrib.auth.hashers.MD5PasswordHasher"]
            if environment == "test"
            else list(global_settings.PASSWORD_HASHERS)
        ),
        "LANGUAGE_CODE": "en-us",
        "TIME_ZONE": "UTC",
        "USE_I18N": True,
        "USE_TZ": True,
        "STATIC_URL": "static/",
        # Production serves collected files (collectstatic at build time); dev and test
        # serve straight from the apps through WhiteNoise's finders.
        "STATIC_ROOT": env.str("STATIC_ROOT", default=str(var_dir / "static" / service)) if production else None,
        "STORAGES": {
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {
                "BACKEND": (
                    "whitenoise.storage.CompressedManifestStaticFilesStorage"
                    if production
                    else "django.contrib.staticfiles.storage.StaticFilesStorage"
                )
            },
        },
        # Dev and test serve static files straight from the apps (no collectstatic step).
        "WHITENOISE_USE_FINDERS": not production,
        "WHITENOISE_AUTOREFRESH": environment == "dev",
        # Bounded input (services/kit/middleware.py, parsers.py): a body limit per route (a service may set its
        # own default and larger limits for named routes), chunked bodies included; JSON nesting depth.
        "DATA_UPLOAD_MAX_MEMORY_SIZE": env.int("ATRIUM_MAX_BODY_BYTES", default=1024 * 1024),
        "ATRIUM_MAX_BODY_BYTES": env.int("ATRIUM_MAX_BODY_BYTES", default=1024 * 1024),
        "ATRIUM_MAX_JSON_DEPTH": env.int("ATRIUM_MAX_JSON_DEPTH", default=32),
        "REST_FRAMEWORK": {
            "DEFAULT_AUTHENTICATION_CLASSES": ["services.kit.auth.JWTAuthentication"],
            "DEFAULT_PERMISSION_CLASSES": ["services.kit.auth.HasScope"],
            "DEFAULT_PARSER_CLASSES": ["services.kit.parsers.StrictJSONParser"],
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
            "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
            "DEFAULT_PAGINATION_CLASS": "services.kit.pagination.CursorPagination",
            "PAGE_SIZE": 50,
            "EXCEPTION_HANDLER": "services.kit.errors.problem_exception_handler",
            "DEFAULT_SCHEMA_CLASS": "services.kit.schema.AtriumAutoSchema",
            "UNAUTHENTICATED_USER": None,
        },
        "SPECTACULAR_SETTINGS": {
            "TITLE": f"Atrium {service} API",
            "VERSION": env.str("ATRIUM_VERSION", default="0.1.0"),
            "SERVE_INCLUDE_SCHEMA": False,
            "SWAGGER_UI_DIST": "SIDECAR",
            "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
            "REDOC_DIST": "SIDECAR",
            "COMPONENT_SPLIT_REQUEST": True,
            "SCHEMA_PATH_PREFIX": r"/api/v1",
            # Swagger UI: "Authorize" takes a machine client's id and secret (OAuth 2.0 client credentials at the
            # portal's token URL, services/kit/schema.py) and keeps the token across reloads; "Try it out" shows
            # how long each call took.
            "SWAGGER_UI_SETTINGS": {"persistAuthorization": True, "displayRequestDuration": True, "deepLinking": True},
            "POSTPROCESSING_HOOKS": [
                "drf_spectacular.hooks.postprocess_schema_enums",
                "services.kit.schema.problem_responses",
            ],
        },
        # Identity: services verify portal-issued JWTs locally against the JWKS.
        "JWT_ISSUER": env.str("JWT_ISSUER", default="atrium-portal"),
        "JWT_AUDIENCE": service,
        "JWT_JWKS_URL": env.str(
            "JWT_JWKS_URL", default="" if production else "http://127.0.0.1:8000/.well-known/jwks.json"
        ),
        "JWT_JWKS_CACHE_SECONDS": env.int("JWT_JWKS_CACHE_SECONDS", default=300),
        "JWT_LEEWAY_SECONDS": env.int("JWT_LEEWAY_SECONDS", default=30),
        # Revoked clients and rotated secrets (services/kit/revocations.py): a Redis hash + pub/sub channel on
        # REDIS_URL, and the portal's endpoint (empty: atrium-revocations.json next to JWT_JWKS_URL), read by a
        # background thread per process: on each announcement, every POLL seconds, and the endpoint every RECONCILE.
        "JWT_REVOCATIONS_KEY": env.str("JWT_REVOCATIONS_KEY", default="atrium:identity:revocations"),
        "JWT_REVOCATIONS_URL": env.str("JWT_REVOCATIONS_URL", default=""),
        "JWT_REVOCATIONS_POLL_SECONDS": env.float("JWT_REVOCATIONS_POLL_SECONDS", default=2.0),
        "JWT_REVOCATIONS_RECONCILE_SECONDS": env.float("JWT_REVOCATIONS_RECONCILE_SECONDS", default=60.0),
        # Outbox relay: "daemon" (default) — `manage.py outbox_relay` delivers, web processes do no relay work;
        # "thread" — each process delivers right after its own commits; "off" — only the beat sweep delivers.
        "ATRIUM_OUTBOX_RELAY": env.str("ATRIUM_OUTBOX_RELAY", default="daemon"),
        "ATRIUM_OUTBOX_RELAY_INTERVAL": env.float("ATRIUM_OUTBOX_RELAY_INTERVAL", default=0.5),
        "ATRIUM_OUTBOX_POLL_SECONDS": env.float("ATRIUM_OUTBOX_POLL_SECONDS", default=5.0),
        # Events per published message when there is a backlog (fewer, larger messages: less overhead per event).
        "ATRIUM_OUTBOX_BATCH": env.int("ATRIUM_OUTBOX_BATCH", default=1000),
        # Published outbox rows are deleted this many days after they were written (beat: <service>.outbox_purge).
        "ATRIUM_OUTBOX_RETENTION_DAYS": env.int("ATRIUM_OUTBOX_RETENTION_DAYS", default=7),
        # Verified tokens remembered per process (0 disables), each for at most this long.
        "JWT_VERIFIED_CACHE_SIZE": env.int("JWT_VERIFIED_CACHE_SIZE", default=1024),
        "JWT_VERIFIED_CACHE_SECONDS": env.int("JWT_VERIFIED_CACHE_SECONDS", default=60),
        # This process's own machine identity, for calls it makes to other services.
        # <SERVICE>_CLIENT_ID / _SECRET win over ATRIUM_CLIENT_ID / _SECRET (one environment for every process).
        "ATRIUM_CLIENT_ID": env.str(f"{service.upper()}_CLIENT_ID", default="")
        or env.str("ATRIUM_CLIENT_ID", default=""),
        "ATRIUM_CLIENT_SECRET": env.str(f"{service.upper()}_CLIENT_SECRET", default="")
        or env.str("ATRIUM_CLIENT_SECRET", default=""),
        "ATRIUM_TOKEN_URL": env.str(
            "ATRIUM_TOKEN_URL", default="" if production else "http://127.0.0.1:8000/api/v1/auth/token"
        ),
        # The service catalog: each process registers from the manifest in its code (ATRIUM_MANIFEST, a module
        # with MANIFEST), heartbeats, and reports who called it (services/kit/catalog.py).
        # Unset in tests: a test process registers only with the portal a test gives it.
        "ATRIUM_PORTAL_URL": env.str(
            "ATRIUM_PORTAL_URL", default="http://127.0.0.1:8000" if environment == "dev" else ""
        ),
        "ATRIUM_PUBLIC_URL": env.str(f"{service.upper()}_URL", default="") or env.str("ATRIUM_PUBLIC_URL", default=""),
        "ATRIUM_MANIFEST": root_urlconf.rpartition(".")[0] + ".manifest",
        "ATRIUM_CATALOG_REGISTER": env.bool("ATRIUM_CATALOG_REGISTER", default=True),
        # Until the portal's first answer says otherwise (each heartbeat's answer carries the interval).
        "ATRIUM_CATALOG_HEARTBEAT_SECONDS": env.float("ATRIUM_CATALOG_HEARTBEAT_SECONDS", default=10.0),
        # Requests to URLs others chose (catalog health URLs, webhook endpoints) reach public addresses only, and
        # these networks (CIDRs) besides: services/kit/outbound.py. Empty by default; `make up` allows 127.0.0.1/32.
        "ATRIUM_OUTBOUND_ALLOW_NETWORKS": outbound_allow_networks(),
        # Job tracking: every process appends its tasks' life-cycle events to this Redis stream, which the
        # portal's job monitor reads (services/kit/tracking.py, portal/jobs/monitor.py).
        "JOBS_TRACKING": env.bool("JOBS_TRACKING", default=True),
        "JOBS_STREAM": env.str("JOBS_STREAM", default="atrium:jobs:events"),
        "JOBS_REDIS_URL": env.str("JOBS_REDIS_URL", default="") or redis_url,
        "JOBS_STREAM_MAXLEN": env.int("JOBS_STREAM_MAXLEN", default=500_000),  # entries: batches of events
        "JOBS_TRACKING_FLUSH_SECONDS": env.float("JOBS_TRACKING_FLUSH_SECONDS", default=0.1),
        "JOBS_TRACKING_BATCH": env.int("JOBS_TRACKING_BATCH", default=500),
        "JOBS_TRACKING_BUFFER_MAX": env.int("JOBS_TRACKING_BUFFER_MAX", default=100_000),
        "JOBS_WORKER_HEARTBEAT_SECONDS": env.float("JOBS_WORKER_HEARTBEAT_SECONDS", default=5.0),
        # Celery (namespace CELERY_ in services/kit/celery_app.py).
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": env.str("CELERY_RESULT_BACKEND", default=redis_url),
        "CELERY_IMPORTS": celery_imports or [],
        "CELERY_TASK_TIME_LIMIT": env.int("CELERY_TASK_TIME_LIMIT", default=300),
        "CELERY_TASK_SOFT_TIME_LIMIT": env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=270),
        "CELERY_RESULT_EXPIRES": env.int("CELERY_RESULT_EXPIRES", default=86_400),
        # With late acks, an unacknowledged task is redelivered after this long;
        # it must exceed the longest task including its countdown/eta.
        "CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)},
        "CELERY_WORKER_CONCURRENCY": env.int("CELERY_WORKER_CONCURRENCY", default=2),
        "REDIS_URL": redis_url,
        "LOGGING": logging_config(service=service, level=env.str("LOG_LEVEL", default="INFO")),
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "X_FRAME_OPTIONS": "DENY",
        "SESSION_COOKIE_HTTPONLY": True,
        # TLS terminates at the load balancer (production); health and metrics stay plain HTTP for in-cluster
        # probes and scrapers. Elsewhere: Django's defaults.
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https") if production else None,
        "SECURE_SSL_REDIRECT": production and env.bool("SECURE_SSL_REDIRECT", default=True),
        "SECURE_REDIRECT_EXEMPT": [r"^health/", r"^metrics$"] if production else [],
        "SECURE_HSTS_SECONDS": env.int("SECURE_HSTS_SECONDS", default=31_536_000) if production else 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": production,
        "SECURE_HSTS_PRELOAD": production,
        "SESSION_COOKIE_SECURE": production,
        "CSRF_COOKIE_SECURE": production,
        "CSRF_TRUSTED_ORIGINS": env.list("CSRF_TRUSTED_ORIGINS", default=[]) if production else [],
        # Throttled logins (django-axes), in every admin: see login_throttle_settings.
        **login_throttle_settings(),
    }
    return KitSettings(**settings)


_AXES_MIDDLEWARE = "axes.middleware.AxesMiddleware"


@dataclass(frozen=True)
class SSOSettings:
    """A service admin's sign-in through the portal (services/kit/sso.py, docs/sso.md): mozilla-django-oidc's
    settings, the service's cookie names and its role mapping. A service's settings module assigns each field by
    name (``OIDC_RP_CLIENT_ID = sso.OIDC_RP_CLIENT_ID``)."""

    OIDC_RP_CLIENT_ID: str
    OIDC_RP_CLIENT_SECRET: str
    OIDC_OP_AUTHORIZATION_ENDPOINT: str
    OIDC_OP_TOKEN_ENDPOINT: str
    OIDC_OP_USER_ENDPOINT: str
    OIDC_OP_JWKS_ENDPOINT: str
    OIDC_RP_SIGN_ALGO: str
    OIDC_RP_SCOPES: str
    OIDC_USE_PKCE: bool
    OIDC_TIMEOUT: float
    OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS: int
    OIDC_AUTHENTICATION_CALLBACK_URL: str
    LOGIN_REDIRECT_URL: str
    LOGIN_REDIRECT_URL_FAILURE: str
    LOGOUT_REDIRECT_URL: str
    SESSION_COOKIE_NAME: str
    CSRF_COOKIE_NAME: str
    ATRIUM_SSO_ROLES: str
    ATRIUM_SSO_BREAKGLASS_MINUTES: int
    AUTHENTICATION_BACKENDS: list[str]
    MIDDLEWARE: list[str]


def sso_client_settings(*, service: str, roles: str, kit: KitSettings) -> SSOSettings:
    """A service admin signs people in at the portal (OpenID Connect, authorization code + PKCE).

    ``<SERVICE>_OIDC_CLIENT_ID`` / ``_SECRET`` are the service's client at the portal (``make up``'s
    ``demo_setup`` creates them); without them the admin keeps Django's own login form (tests, a service run
    alone), and production warns (``atrium.W010``). ``ATRIUM_SSO_URL`` is the portal as browsers reach it
    (default ``ATRIUM_PORTAL_URL``; https in production, or ``atrium.W010``); ``ATRIUM_SSO_INTERNAL_URL`` as
    this process reaches it (default: the same). ``ATRIUM_SSO_REFRESH_SECONDS`` (300): a signed-in session is
    re-checked at the portal this often, so a logout there (or a role taken away) ends it within that time.
    ``roles``: the dotted path of the service's ``ROLE_RULES`` (portal role → its permissions).
    """
    public = (env.str("ATRIUM_SSO_URL", default="") or kit.ATRIUM_PORTAL_URL).rstrip("/")
    internal = (env.str("ATRIUM_SSO_INTERNAL_URL", default="") or public).rstrip("/")
    refresh = env.int("ATRIUM_SSO_REFRESH_SECONDS", default=300)
    if refresh < 1:
        raise ImproperlyConfigured("ATRIUM_SSO_REFRESH_SECONDS must be positive")
    return SSOSettings(
        OIDC_RP_CLIENT_ID=env.str(f"{service.upper()}_OIDC_CLIENT_ID", default=""),
        OIDC_RP_CLIENT_SECRET=env.str(f"{service.upper()}_OIDC_CLIENT_SECRET", default=""),
        OIDC_OP_AUTHORIZATION_ENDPOINT=f"{public}/o/authorize",
        OIDC_OP_TOKEN_ENDPOINT=f"{internal}/o/token",
        OIDC_OP_USER_ENDPOINT=f"{internal}/o/userinfo",
        OIDC_OP_JWKS_ENDPOINT=f"{internal}/o/jwks",
        OIDC_RP_SIGN_ALGO="RS256",
        OIDC_RP_SCOPES="openid profile email",
        OIDC_USE_PKCE=True,
        OIDC_TIMEOUT=env.float("ATRIUM_SSO_TIMEOUT", default=5.0),
        OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS=refresh,
        OIDC_AUTHENTICATION_CALLBACK_URL="oidc_authentication_callback",
        LOGIN_REDIRECT_URL="/admin/",
        LOGIN_REDIRECT_URL_FAILURE="/admin/login/",
        LOGOUT_REDIRECT_URL="/admin/",
        # Every service runs on the portal's host in dev (cookies do not keep ports apart): its own cookie names.
        SESSION_COOKIE_NAME=f"atrium_{service}_session",
        CSRF_COOKIE_NAME=f"atrium_{service}_csrftoken",
        ATRIUM_SSO_ROLES=roles,
        ATRIUM_SSO_BREAKGLASS_MINUTES=env.int("ATRIUM_SSO_BREAKGLASS_MINUTES", default=60),
        AUTHENTICATION_BACKENDS=[*kit.AUTHENTICATION_BACKENDS, "services.kit.sso.SSOBackend"],
        # After the session and authentication middleware: re-checks the sign-in at the portal, ends break-glass.
        MIDDLEWARE=[
            *(m for m in kit.MIDDLEWARE if m != _AXES_MIDDLEWARE),
            "services.kit.sso.SessionRefresh",
            _AXES_MIDDLEWARE,  # still last
        ],
    )


LOCKOUT_PARAMETERS = ("username", "ip_address")


def login_throttle_settings() -> dict[str, Any]:
    """django-axes, configured from the environment (services/kit/logins.py says what the kit adds).

    ``AXES_FAILURE_LIMIT`` failed logins (5) for one username (from any address) or from one address (for any
    username) lock it out for ``AXES_COOLOFF_SECONDS`` (900; 0: until an operator unlocks it) after its last
    failure; failures while locked out extend the lockout. ``AXES_LOCKOUT_PARAMETERS`` (``username,ip_address``)
    can drop one of the two (e.g. ``username`` alone behind a NAT shared by many people). ``AXES_RESET_ON_SUCCESS``
    (true): a successful login forgives that username's failures from that address. The client's address is
    ``REMOTE_ADDR``, or behind ``ATRIUM_PROXY_COUNT`` reverse proxies the ``X-Forwarded-For`` entry that many hops
    from the right (the left part is whatever the client sent). ``AXES_ENABLED`` (true) turns it all off.
    """
    parameters = env.list("AXES_LOCKOUT_PARAMETERS", default=list(LOCKOUT_PARAMETERS))
    if not parameters or not set(parameters) <= set(LOCKOUT_PARAMETERS):
        raise ImproperlyConfigured(f"AXES_LOCKOUT_PARAMETERS must name some of {LOCKOUT_PARAMETERS}")
    limit = env.int("AXES_FAILURE_LIMIT", default=5)
    cool_off = env.int("AXES_COOLOFF_SECONDS", default=900)
    proxies = env.int("ATRIUM_PROXY_COUNT", default=0)
    if limit < 1 or cool_off < 0 or proxies < 0:
        raise ImproperlyConfigured(
            "AXES_FAILURE_LIMIT must be positive, AXES_COOLOFF_SECONDS and ATRIUM_PROXY_COUNT not negative"
        )
    return {
        "AUTHENTICATION_BACKENDS": [
            "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login before any password check
            "django.contrib.auth.backends.ModelBackend",
        ],
        "AXES_ENABLED": env.bool("AXES_ENABLED", default=True),
        "AXES_HANDLER": "services.kit.logins.LoginThrottleHandler",
        "AXES_FAILURE_LIMIT": limit,
        "AXES_COOLOFF_TIME": timedelta(seconds=cool_off) if cool_off else None,
        "AXES_LOCKOUT_PARAMETERS": parameters,
        "AXES_RESET_ON_SUCCESS": env.bool("AXES_RESET_ON_SUCCESS", default=True),
        "AXES_CLIENT_IP_CALLABLE": "services.kit.logins.client_ip_address",
        "AXES_LOCKOUT_CALLABLE": "services.kit.logins.lockout_response",
        "ATRIUM_PROXY_COUNT": proxies,
        # The audit trail records logins and logouts; the kit's admin shows the attempts with an unlock.
        "AXES_DISABLE_ACCESS_LOG": True,
        "AXES_ENABLE_ADMIN": False,
        "AXES_VERBOSE": False,  # no start-up banner in every process's output
    }


def web_layout() -> tuple[int, int]:
    """Gunicorn (workers, threads) for a web process: ``WEB_CONCURRENCY`` / ``WEB_THREADS``, else
    2 x usable cores + 1 workers (gunicorn's own rule of thumb) with 2 threads each.

    Processes rather than threads carry the concurrency: a request holding a ledger account's row
    lock must not wait for the GIL behind a sibling thread's CPU work (measured in docs/benchmarks.md).
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * cores + 1)
    threads = int(os.environ.get("WEB_THREADS") or 2)
    if workers < 1 or threads < 1:
        raise ImproperlyConfigured("WEB_CONCURRENCY and WEB_THREADS must be positive integers.")
    return workers, threads


def logging_config(*, service: str, level: str) -> dict[str, Any]:
    """JSON lines on stdout for every logger, each line tagged with service, request and task id; outside
    production, ``ATRIUM_LOG_FORMAT=console`` (``make up``) makes them readable lines, in colour when
    ``ATRIUM_LOG_COLOR=1`` or stdout is a terminal."""
    console = env.str("ATRIUM_LOG_FORMAT", default="json") == "console" and atrium_env() != "production"
    colour = env.bool("ATRIUM_LOG_COLOR", default=sys.stdout.isatty())
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "services.kit.logs.ContextFilter", "service": service}},
        "formatters": {
            "json": {"()": "services.kit.logs.JsonFormatter"},
            "console": {"()": "services.kit.logs.ConsoleFormatter", "colour": colour},
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "console" if console else "json",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            # Request errors are reported by our own middleware/handler as JSON.
            "django.request": {"level": "ERROR"},
            "django.server": {"level": "WARNING"},
            "celery": {"level": level},
            # One line per outgoing call is noise; the kit's client logs failures itself.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            # django-axes narrates every login; its warnings (failures, lockouts) are enough.
            "axes": {"level": "WARNING"},
        },
    }
