"""Throttled logins in every Django admin: django-axes, audited, with an operator unlock.

django-axes counts failed logins (``axes_accessattempt`` rows, one per username, address and user agent) and,
once the failures of one **username** (across addresses) or of one **address** (across usernames) within the
cool-off reach ``AXES_FAILURE_LIMIT``, refuses every login for it — the right password too — until the cool-off
has passed since its last failure, or an operator unlocks it. Settings come from the environment
(``services/kit/conf.py: login_throttle_settings``). What this module adds to the library:

- :class:`LoginThrottleHandler` records each lockout as an ``auth.login.locked_out`` audit event, once per
  lockout (the failure that reached the limit, not every attempt refused afterwards), and on a successful login
  forgives only that username's failures from that address.
- :func:`client_ip_address` says whose address a request is, behind ``ATRIUM_PROXY_COUNT`` reverse proxies.
- :func:`lockout_response` answers a refused login: an HTML page for the admin's form, problem+json 429
  ``login_locked_out`` for anything asking for JSON.
- :func:`login_unlock` clears a username's or an address's failures, audited as ``auth.login.unlocked``
  (the admin's *Access attempts* page and action call it).

Failed logins themselves are audited elsewhere (the portal's ``auth.login.failed``): a refused attempt is one of
them, and is not recorded a second time here.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_parameters, get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin
from django.db import connection, router, transaction
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from services.kit.audit import audit_record
from services.kit.errors import problem_response
from services.kit.logs import get_logger

log = get_logger(__name__)

LOCKED_OUT_CODE = "login_locked_out"
# What a lockout or an unlock is about: the lockout parameter and the audit object type naming it.
PARAMETERS = {"username": "username", "ip_address": "address"}
# pg_advisory_xact_lock(classid, objid) namespace: failures of one username or address are counted one at a time.
_ADVISORY_NAMESPACE = 0x4C4F474E  # "LOGN"


def client_ip_address(request: HttpRequest) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or behind ``ATRIUM_PROXY_COUNT`` reverse proxies that each append
    the address they saw to ``X-Forwarded-For``, the entry that many hops from its right end.

    Entries further left were written by the client and prove nothing (anyone can send the header); the
    outermost trusted proxy's entry is the address that connected to it. A header with fewer entries than
    proxies, or an entry that is not an IP address, falls back to ``REMOTE_ADDR``.
    """
    remote = _ip(request.META.get("REMOTE_ADDR", ""))
    hops = int(getattr(settings, "ATRIUM_PROXY_COUNT", 0) or 0)
    if hops <= 0:
        return remote
    forwarded = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    if len(forwarded) < hops:
        return remote
    return _ip(forwarded[-hops]) or remote


def _ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _values(request: HttpRequest, credentials: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One ``{parameter: value}`` per lockout parameter (username, ip_address), as axes counts them."""
    username = get_client_username(request, credentials)
    return get_client_parameters(username, request.axes_ip_address, request.axes_user_agent, request, credentials)


class LoginThrottleHandler(AxesDatabaseHandler):
    """axes's database handler, plus an audit event per lockout and a narrower reset on success."""

    def user_login_failed(
        self, sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
    ) -> None:
        if request is None:
            super().user_login_failed(sender, credentials, request, **kwargs)
            return
        values = _values(request, credentials)
        with transaction.atomic(using=router.db_for_write(AccessAttempt)):
            # Concurrent failures for one username or address take turns, so one lockout is audited once.
            with connection.cursor() as cursor:
                for key in sorted(f"{k}={v}" for value in values for k, v in value.items() if v):
                    cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_ADVISORY_NAMESPACE, key])
            before = self._locked(request, credentials)
            super().user_login_failed(sender, credentials, request, **kwargs)
            after = self._locked(request, credentials)
            for value, was, now in zip(values, before, after, strict=True):
                if now and not was:
                    self._audit_lockout(request, credentials, value)

    def _locked(self, request: HttpRequest, credentials: dict[str, Any] | None) -> list[bool]:
        """For each lockout parameter, whether its failures within the cool-off reach the limit."""
        limit = get_failure_limit(request, credentials)
        return [
            (attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0) >= limit
            for attempts in self.get_user_attempts(request, credentials)
        ]

    def _audit_lockout(self, request: HttpRequest, credentials: dict[str, Any] | None, value: dict[str, Any]) -> None:
        ((parameter, subject),) = value.items()
        if not subject:
            return  # no username given: nothing named was locked
        cool_off = get_cool_off(request)
        audit_record(
            "auth.login.locked_out",
            outcome="failure",
            actor={"type": "system", "id": settings.ATRIUM_SERVICE, "display": settings.ATRIUM_SERVICE},
            object_type=PARAMETERS.get(parameter, parameter),
            object_id=str(subject),
            metadata={
                "parameter": parameter,
                "username": str(get_client_username(request, credentials) or ""),
                "ip_address": request.axes_ip_address or "",
                "failure_limit": get_failure_limit(request, credentials),
                "cool_off_seconds": int(cool_off.total_seconds()) if cool_off else None,
            },
            request=request,
        )
        log.warning("login.locked_out", parameter=parameter)

    def reset_user_attempts(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        """On a successful login, forget that username's failures from that address only: the password proves
        nothing about what others tried elsewhere, and one valid account must not clear an address's count."""
        username = get_client_username(request, credentials)
        if not username:
            return 0
        count, _ = AccessAttempt.objects.filter(username=username, ip_address=request.axes_ip_address).delete()
        return count


def lockout_seconds(request: HttpRequest | None = None) -> int | None:
    """How long a lockout lasts after its last failure (None: until an operator unlocks it)."""
    cool_off: timedelta | None = get_cool_off(request)
    return int(cool_off.total_seconds()) if cool_off else None


def _wants_json(request: HttpRequest) -> bool:
    if request.path.startswith("/api/") or request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return True
    accept = request.headers.get("Accept", "")
    return "json" in accept and "html" not in accept


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: 429, a page for people (the admin's login form), problem+json for programs."""
    seconds = lockout_seconds(request)
    if seconds:
        detail = (
            f"Too many failed logins for this username or from this address: logins are refused for "
            f"{_duration(seconds)} after the last failure, or until an operator unlocks them."
        )
    else:
        detail = "Too many failed logins for this username or from this address: an operator must unlock them."
    if _wants_json(request):
        response = problem_response(
            request, status_code=429, code=LOCKED_OUT_CODE, title="Too many failed logins", detail=detail
        )
    else:
        context = {
            **(admin.site.each_context(request) if "django.contrib.admin" in settings.INSTALLED_APPS else {}),
            "title": "Too many failed logins",
            "detail": detail,
            "failure_limit": get_failure_limit(request, credentials),
        }
        response = TemplateResponse(request, "kit/login_locked_out.html", context, status=429).render()
    if seconds:
        response["Retry-After"] = str(seconds)
    response["Cache-Control"] = "no-store"
    return response


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hour(s)"
    if seconds % 60 == 0:
        return f"{seconds // 60} minute(s)"
    return f"{seconds} second(s)"


def login_unlock(*, username: str = "", ip_address: str = "") -> int:
    """Clear the recorded failures of ``username`` (from every address) or of ``ip_address`` (for every username),
    so logins for it are accepted again; audited as ``auth.login.unlocked`` (actor: the current request's user).
    Return how many attempt records were cleared."""
    if bool(username) == bool(ip_address):
        raise ValueError("unlock exactly one of a username or an address")
    if ip_address:
        ip_address = _ip(ip_address) or ""
        if not ip_address:
            raise ValueError("not an IP address")
    parameter, subject = ("username", username) if username else ("ip_address", ip_address)
    with transaction.atomic(using=router.db_for_write(AccessAttempt)):
        cleared, _ = AccessAttempt.objects.filter(**{parameter: subject}).delete()
        audit_record(
            "auth.login.unlocked",
            object_type=PARAMETERS[parameter],
            object_id=subject,
            metadata={"parameter": parameter, parameter: subject, "attempts_cleared": cleared},
        )
    log.info("login.unlocked", parameter=parameter, attempts_cleared=cleared)
    return cleared
