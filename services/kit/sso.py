"""Every service admin signs people in at the portal: OpenID Connect, authorization code with PKCE.

mozilla-django-oidc does the protocol (the redirect with state, nonce and PKCE; the token exchange; the ID token's
signature against the portal's JWKS; userinfo). What Atrium adds, here, for every service alike (docs/sso.md):

- :class:`SSOBackend` makes the person a user of this service at each sign-in, from the portal's claims: the
  username is the portal's, the password unusable; their groups are re-synced from the ``roles`` claim, each
  portal role mapped to this service's permissions by its ``ROLE_RULES`` (``settings.ATRIUM_SSO_ROLES``); the
  portal's admin role makes a superuser. A change of roles is audited (``auth.role.changed``). Nobody without a
  role, and no deactivated user, gets in (``auth.login.refused``).
- :class:`SSOCallbackView` audits each sign-in (``auth.login.succeeded``) and answers every refusal — no role,
  an unknown or replayed ``state``, a code the portal will not exchange for this client, an error from the
  portal — with a page saying why (400/403), never a 500, each audited with the person's portal identity when
  known.
- :func:`admin_login` is the admin's login page: with a client configured it goes to the portal; Django's form
  stays at ``/admin/login/local/`` for break-glass accounts only (``manage.py breakglass_superuser``).
- :class:`SessionRefresh` re-asks the portal (silently, ``prompt=none``) every ``ATRIUM_SSO_REFRESH_SECONDS``:
  once the person has logged out of the portal, or lost their roles, the service's session ends. It also ends
  break-glass sessions when their time is up.

The actor of every audit event is the person's portal identity: ``sub`` (the portal user's id) and username.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, auth
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.signals import user_logged_in
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string
from mozilla_django_oidc import middleware as oidc_middleware
from mozilla_django_oidc import views as oidc_views
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from requests import RequestException

from services.kit.audit import SSO_SUB_SESSION_KEY, audit_record
from services.kit.logs import get_logger
from services.kit.roles import permission_keys_granted

log = get_logger(__name__)

ROLE_ADMIN = "admin"
BREAKGLASS_PREFIX = "breakglass-"
DISPATCH_UID = "atrium-sso-login"


def sso_enabled() -> bool:
    """Whether this service signs people in at the portal (a client id is configured)."""
    return bool(getattr(settings, "OIDC_RP_CLIENT_ID", ""))


def role_rules() -> dict[str, list[str]]:
    """This service's mapping of portal roles to its permissions (``settings.ATRIUM_SSO_ROLES``)."""
    return import_string(settings.ATRIUM_SSO_ROLES)


class SignInRefused(Exception):
    """A sign-in this service will not complete: ``reason`` is stable (``no_role``, ``inactive``, ``bad_state``,
    ``code_refused``, ``bad_token``, ``portal_unreachable``, ``portal_error``, ``bad_request``, ``refused``,
    ``not_configured``, ``local_account``)."""

    def __init__(self, reason: str, detail: str, *, status: int = 403, actor: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.status, self.actor = reason, detail, status, actor


def _actor(claims: dict[str, Any]) -> dict[str, str]:
    return {"type": "user", "id": str(claims.get("sub", "")), "display": str(claims.get("preferred_username", ""))}


def _refusal_record(request: HttpRequest, refused: SignInRefused) -> None:
    with transaction.atomic():
        audit_record(
            "auth.login.refused",
            outcome="failure",
            actor=refused.actor,
            object_type="user",
            object_id=(refused.actor or {}).get("display", ""),
            metadata={"reason": refused.reason, "method": "sso", "detail": refused.detail[:500]},
            request=request,
        )
    log.warning("sso.login_refused", reason=refused.reason)


def role_groups_sync() -> dict[str, Group]:
    """One group per portal role, holding exactly the permissions this service's rules give it."""
    rules = role_rules()
    permissions = {
        f"{p.content_type.app_label}.{p.codename}": p for p in Permission.objects.select_related("content_type")
    }
    groups = {}
    for role, role_rules_ in rules.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = {permissions[k].pk for k in permission_keys_granted(role_rules_, permissions)}
        if set(group.permissions.values_list("pk", flat=True)) != wanted:
            group.permissions.set(wanted)
        groups[role] = group
    return groups


def user_sync(*, claims: dict[str, Any], request: HttpRequest | None = None) -> Any:
    """The service's user for the portal's ``claims``, created or updated, groups re-synced from ``roles``.

    Raises :class:`SignInRefused` (audited) for a person with no role here or a deactivated user; a role change is
    audited (``auth.role.changed``) either way."""
    username = str(claims.get("preferred_username") or "")
    if not username or not claims.get("sub"):
        raise SignInRefused("bad_token", "The portal's answer names no user.", status=400)
    actor = _actor(claims)
    known = role_rules()
    roles = sorted({str(r) for r in claims.get("roles") or [] if str(r) in known})
    User = get_user_model()
    with transaction.atomic():
        groups = role_groups_sync()
        user = User.objects.select_for_update().filter(username=username).first()
        before = sorted(user.groups.filter(name__in=known).values_list("name", flat=True)) if user else []
        if user is not None and not user.is_active:
            raise SignInRefused("inactive", "This account is deactivated in this service.", actor=actor)
        if username.startswith(BREAKGLASS_PREFIX) or (user is not None and user.has_usable_password()):
            # A local account (break-glass, or made with a password here) is never taken over by a portal sign-in
            # that happens to carry its name.
            raise SignInRefused(
                "local_account", f"{username} is a local account of this service, not a portal one.", actor=actor
            )
        if user is None and roles:
            user = User.objects.create_user(username=username, email=str(claims.get("email") or ""))
            user.set_unusable_password()
        if user is not None:
            user.email = str(claims.get("email") or "")
            user.is_staff = bool(roles)
            user.is_superuser = ROLE_ADMIN in roles
            user.save()
            user.groups.remove(*(g for name, g in groups.items() if name not in roles))
            user.groups.add(*(groups[name] for name in roles))
            if before != roles:
                audit_record(
                    "auth.role.changed",
                    actor=actor,
                    object_type="user",
                    object_id=username,
                    changes={"roles": [before, roles]},
                    metadata={"sub": str(claims["sub"]), "method": "sso"},
                    request=request,
                )
    if not roles:
        raise SignInRefused(
            "no_role", f"{username} holds no portal role that gives access to this service's admin.", actor=actor
        )
    return user


class SSOBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, with users matched by the portal's username and re-synced at each sign-in."""

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        if request is None or not sso_enabled() or "code" not in request.GET:
            return None  # a password login (break-glass) or no sign-in at all: not ours
        try:
            return super().authenticate(request, **kwargs)
        except SignInRefused:
            raise
        except SuspiciousOperation as exc:
            raise SignInRefused("bad_token", f"The portal's answer could not be verified ({exc}).", status=400) from exc
        except RequestException as exc:
            response = getattr(exc, "response", None)
            if response is not None and response.status_code in (400, 401):
                raise SignInRefused(
                    "code_refused",
                    "The portal refused this sign-in's code: it was not issued to this service, was used already "
                    "or has expired.",
                    status=400,
                ) from exc
            raise SignInRefused("portal_unreachable", "The portal could not be reached.", status=502) from exc

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        claims = {**payload, **self.get_userinfo(access_token, id_token, payload)}
        if str(claims.get("sub")) != str(payload.get("sub")):
            raise SignInRefused("bad_token", "The portal's userinfo is about someone else.", status=400)
        user = user_sync(claims=claims, request=self.request)
        self.request.atrium_sso_claims = claims  # type: ignore[attr-defined]
        return user

    def get_user(self, user_id: Any) -> Any:
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None


def _refused_page(request: HttpRequest, refused: SignInRefused) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": "Sign-in refused",
        "reason": refused.reason,
        "detail": refused.detail,
        "retry_url": reverse("oidc_authentication_init"),
        "portal_url": settings.OIDC_OP_AUTHORIZATION_ENDPOINT.rsplit("/o/", 1)[0],
    }
    response = TemplateResponse(request, "kit/sso_refused.html", context, status=refused.status)
    response["Cache-Control"] = "no-store"
    return response


class SSOCallbackView(oidc_views.OIDCAuthenticationCallbackView):
    """Where the portal sends the browser back: the library's callback, with every refusal a page and audited."""

    def get(self, request: HttpRequest) -> HttpResponse:
        refreshing = request.user.is_authenticated
        error = request.GET.get("error")
        try:
            if error:
                states = request.session.get("oidc_states", {})
                if request.GET.get("state") in states:  # forget it: a state is good for one answer
                    del states[request.GET["state"]]
                    request.session.modified = True
                if request.user.is_authenticated:
                    auth.logout(request)
                if error == "login_required":
                    # A silent refresh: the person is no longer signed in at the portal. Sign in again there.
                    log.info("sso.session_ended")
                    return HttpResponseRedirect(reverse("admin:login"))
                raise SignInRefused("portal_error", f"The portal answered {error[:100]!r}.", status=403)
            state = request.GET.get("state", "")
            if "code" not in request.GET or not state:
                raise SignInRefused("bad_request", "This sign-in link is incomplete.", status=400)
            if state not in request.session.get("oidc_states", {}):
                raise SignInRefused(
                    "bad_state",
                    "This sign-in was not started here, or was completed already (unknown state).",
                    status=400,
                )
            response = super().get(request)
        except SignInRefused as refused:
            if refreshing:
                auth.logout(request)
            _refusal_record(request, refused)
            return _refused_page(request, refused)
        return response

    def login_failure(self) -> HttpResponse:
        # The library redirects to the login page, which would start the sign-in again (a loop when the refusal
        # repeats, e.g. a locked-out address): say so instead.
        raise SignInRefused("refused", "This service did not accept the sign-in.", status=403)

    def login_success(self) -> HttpResponse:
        request = self.request
        refresh = request.user.is_authenticated and request.user == self.user
        response = super().login_success()
        claims = getattr(request, "atrium_sso_claims", {})
        request.session[SSO_SUB_SESSION_KEY] = str(claims.get("sub", ""))
        if not refresh:
            with transaction.atomic():
                audit_record(
                    "auth.login.succeeded",
                    actor=_actor(claims),
                    object_type="user",
                    object_id=self.user.get_username(),
                    metadata={"method": "sso", "roles": sorted(claims.get("roles") or [])},
                    request=request,
                )
        return response


class SSOAuthenticateView(oidc_views.OIDCAuthenticationRequestView):
    """The start of a sign-in: to the portal (a page saying so when this service has no client configured)."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso_enabled():
            refused = SignInRefused("not_configured", "Sign-in through the portal is not configured here.", status=404)
            return _refused_page(request, refused)
        return super().get(request)


def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """The admin's login page: the portal when this service has a client there, else Django's form."""
    if not sso_enabled():
        return admin.site.login(request, extra_context)
    query = {"next": request.GET["next"]} if request.GET.get("next") else {}
    url = reverse("oidc_authentication_init")
    return HttpResponseRedirect(f"{url}?{urlencode(query)}" if query else url)


def admin_login_local(request: HttpRequest) -> HttpResponse:
    """Django's own login form, for break-glass accounts (nobody else here has a password)."""
    return admin.site.login(request, {"title": "Break-glass login"})


def breakglass_expired(user: Any, now: dt.datetime | None = None) -> bool:
    """Whether ``user`` is a break-glass account whose time is up."""
    if not user.get_username().startswith(BREAKGLASS_PREFIX):
        return False
    lifetime = dt.timedelta(minutes=settings.ATRIUM_SSO_BREAKGLASS_MINUTES)
    return (now or timezone.now()) >= user.date_joined + lifetime


class SessionRefresh(oidc_middleware.SessionRefresh):
    """Re-checks a signed-in person at the portal every ``ATRIUM_SSO_REFRESH_SECONDS``; ends expired break-glass
    sessions (and deactivates the account)."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and breakglass_expired(user):
            with transaction.atomic():
                get_user_model().objects.filter(pk=user.pk).update(is_active=False)
                audit_record(
                    "auth.breakglass.expired",
                    object_type="user",
                    object_id=user.get_username(),
                    request=request,
                )
            auth.logout(request)
            return HttpResponseRedirect(reverse("sso-admin-login-local"))
        if not sso_enabled():
            return None
        return super().process_request(request)


def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """A password login (only break-glass accounts have one here) is audited; sign-ins through the portal are
    audited by the callback, with the person's portal identity."""
    backend = getattr(user, "backend", "") or ""
    if backend.endswith("SSOBackend") or request is None:
        return
    with transaction.atomic():
        audit_record(
            "auth.login.succeeded",
            object_type="user",
            object_id=user.get_username(),
            metadata={"method": "breakglass" if user.get_username().startswith(BREAKGLASS_PREFIX) else "password"},
            request=request,
        )


def connect() -> None:
    """Audit password logins in a service admin (the portal audits its own: portal/identity/audit.py)."""
    if getattr(settings, "ATRIUM_SSO_ROLES", ""):
        user_logged_in.connect(_logged_in, dispatch_uid=DISPATCH_UID)
