"""The portal's home (``/admin/``): every service's status, payments of the last hour and day read over HTTP with
the portal's own machine identity, failing jobs and queue backlogs, the audit trail's latest signed head, links to
every tool and admin, the search box; each tile for the roles that may see it; the page renders when payments or
the broker is away. The admin's model list stays below the tiles.

Payments and the token endpoint are real HTTP servers on this machine scripted by the test (the browser test,
``tests/e2e/test_home_browser.py``, runs the real payments service and portal)."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import Client
from django.utils import timezone

from portal.audit.chain import ingest
from portal.audit.heads import head_sign
from portal.catalog.models import Instance, Service
from portal.home import payments as home_payments
from portal.home.pages import money
from portal.jobs.models import Job, JobMinute
from services.kit import http as kit_http
from services.kit.queues import QUEUES
from tests.portal.factories import user_with_role
from tests.servers import LocalServer, Seen, json_reply

pytestmark = pytest.mark.django_db

HOME = "/admin/"
PORTAL_CLIENT, PORTAL_SECRET = "cli_portal_home", "portal-home-secret"
QUERIES_MAX = 15  # 13 measured for an auditor with 30 services


def stats(window: str, **counts: dict[str, int]) -> dict[str, Any]:
    """A stats document as payments answers it: ``settled={"EUR": (2, 4000)}``."""
    statuses = []
    for status in ("created", "screening", "processing", "settled", "rejected", "failed", "canceled"):
        amounts = [{"currency": c, "count": n, "amount": a} for c, (n, a) in sorted(counts.get(status, {}).items())]
        statuses.append({"status": status, "count": sum(a["count"] for a in amounts), "amounts": amounts})
    return {
        "window": window,
        "since": "2026-12-05T00:00:00Z",
        "until": "2026-12-05T01:00:00Z",
        "count": sum(s["count"] for s in statuses),
        "statuses": statuses,
    }


class Payments:
    """The payments service and the portal's token endpoint, as scripted HTTP servers; what they saw."""

    def __init__(self, start: Callable[..., LocalServer]) -> None:
        self.documents = {
            "1h": stats("1h", settled={"EUR": (2, 4000), "USD": (1, 700)}, failed={"EUR": (1, 99)}),
            "24h": stats("24h", settled={"EUR": (40, 1_234_567), "JPY": (3, 90_000)}, failed={"EUR": (1, 99)}),
        }
        self.status = 200
        self.tokens = start(self._token)
        self.payments = start(self._payments)

    def _token(self, seen: Seen) -> Any:
        form = dict(urllib.parse.parse_qsl(seen.body.decode()))
        if (form.get("client_id"), form.get("client_secret")) != (PORTAL_CLIENT, PORTAL_SECRET):
            return json_reply(401, {"code": "invalid_client"})
        return json_reply(200, {"access_token": f"tok-for-{form['audience']}", "expires_in": 900})

    def _payments(self, seen: Seen) -> Any:
        url = urllib.parse.urlsplit(seen.path)
        if seen.headers.get("authorization") != "Bearer tok-for-payments":
            return json_reply(401, {"code": "invalid_token"})
        if self.status != 200:
            return self.status, {"Content-Type": "application/problem+json"}, b'{"code": "insufficient_scope"}'
        window = urllib.parse.parse_qs(url.query)["window"][0]
        return json_reply(200, self.documents[window])


@pytest.fixture
def payments(local_server: Callable[..., LocalServer], settings: Any) -> Iterator[Payments]:
    found = Payments(local_server)
    settings.PAYMENTS_URL = found.payments.url
    settings.ATRIUM_TOKEN_URL = found.tokens.url + "/api/v1/auth/token"
    settings.ATRIUM_CLIENT_ID, settings.ATRIUM_CLIENT_SECRET = PORTAL_CLIENT, PORTAL_SECRET
    kit_http._breakers.clear()
    home_payments._answers.clear()
    yield found
    kit_http._breakers.clear()
    home_payments._answers.clear()


def logged_in(role: str | None) -> Client:
    client = Client()
    client.force_login(user_with_role(role))
    return client


def text(response: Any) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def section(response: Any, element_id: str) -> str:
    """The text of the element with ``element_id`` up to the next module (enough for these pages)."""
    html = response.content.decode()
    start = html.index(f'id="{element_id}"')
    end = html.find('<div class="module"', start + 1)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[start : end if end > 0 else None]))


def service(
    slug: str,
    *,
    base_url: str = "",
    heartbeat_ago: float = 2.0,
    health: str = "passing",
    part_of: str = "",
    role: str = "web",
) -> Service:
    now = timezone.now()
    found = Service.objects.create(
        slug=slug,
        part_of=part_of or slug,
        role=role,
        display_name=slug.title(),
        base_url=base_url,
        health_url=f"{base_url}/health/ready" if base_url else "",
        openapi_url=f"{base_url}/api/schema" if base_url else "",
        health_status=health,
        last_checked_at=now,
    )
    Instance.objects.create(
        service=found,
        instance=f"{slug}-1",
        host="app-1",
        pid=42,
        started_at=now - dt.timedelta(hours=1),
        first_heartbeat=now - dt.timedelta(hours=1),
        last_heartbeat=now - dt.timedelta(seconds=heartbeat_ago),
    )
    return found


# ------------------------------------------------------------------------------------------- who sees what


def test_anonymous_people_are_sent_to_the_login_page(client: Client):
    response = client.get(HOME)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_a_viewer_sees_services_payments_and_jobs_but_not_the_audit_trail(payments: Payments):
    response = logged_in("viewer").get(HOME)

    assert response.status_code == 200
    ids = set(re.findall(r'id="(home-[a-z-]+)"', response.content.decode()))
    assert {"home-services", "home-payments", "home-jobs", "home-search", "home-tools"} <= ids
    assert "home-audit" not in ids
    assert "/admin/audit/auditevent/" not in response.content.decode()


def test_an_auditor_also_sees_the_audit_trails_latest_signed_head(payments: Payments):
    ingest([_event(n) for n in range(1, 4)])
    head = head_sign()
    ingest([_event(4)])

    response = logged_in("auditor").get(HOME)

    audit = section(response, "home-audit")
    assert f"{head.tree_size} events under the latest signed head" in audit
    assert "4 in the chain (1 awaiting the next head)" in audit
    assert "verified" in audit
    assert "NOT" not in audit
    assert "matches the head" in audit
    assert head.root_hash in audit
    assert f"{head.created_at:%Y-%m-%d %H:%M:%S} UTC (key {head.key_id})" in section(response, "home-audit-signed")


def test_without_a_signed_head_the_audit_tile_says_so(payments: Payments):
    response = logged_in("auditor").get(HOME)

    assert "No signed head yet" in section(response, "home-audit")


def test_staff_without_a_role_see_only_the_links(payments: Payments):
    response = logged_in(None).get(HOME)

    assert response.status_code == 200
    body = response.content.decode()
    for tile in ("home-services", "home-payments", "home-jobs", "home-audit"):
        assert f'id="{tile}"' not in body
    assert payments.payments.calls() == []  # nothing was read for them
    assert 'href="#home-models"' in body


# ------------------------------------------------------------------------------------------- services


def test_every_service_shows_its_status_and_links_to_its_page_admin_and_api_docs(payments: Payments):
    service("ledger", base_url="http://ledger.internal:8001")
    service("payments", base_url="http://payments.internal:8002", health="critical")
    service("worker-ledger", heartbeat_ago=600)  # no web server; stopped heartbeating

    response = logged_in("viewer").get(HOME)

    body = response.content.decode()
    rows = {slug: section(response, f"home-service-{slug}") for slug in ("ledger", "payments", "worker-ledger")}
    assert "passing" in rows["ledger"]
    assert "critical" in rows["payments"]
    assert "critical" in rows["worker-ledger"]
    assert 'href="/admin/catalog/services/ledger/"' in body
    assert 'href="http://ledger.internal:8001/admin/"' in body
    assert 'href="http://payments.internal:8002/api/docs"' in body
    admins = section(response, "home-admins")
    assert "Ledger" in admins
    assert "Payments" in admins
    assert "Worker-Ledger" not in admins


def test_the_home_lists_services_not_processes_a_stopped_worker_degrades_its_service(payments: Payments):
    service("ledger", base_url="http://ledger.internal:8001")
    service("worker-ledger", part_of="ledger", role="worker", heartbeat_ago=600)  # stopped heartbeating
    service("payments", base_url="http://payments.internal:8002")
    service("relay-payments", part_of="payments", role="relay")

    response = logged_in("viewer").get(HOME)

    assert "home-service-worker-ledger" not in response.content.decode()
    assert "home-service-relay-payments" not in response.content.decode()
    ledger, payments_row = section(response, "home-service-ledger"), section(response, "home-service-payments")
    assert "degraded" in ledger
    assert "worker-ledger" in ledger  # the reason names the process
    assert "1 of 2 processes passing" in ledger
    assert "passing" in payments_row
    assert "2 of 2 processes passing" in payments_row
    counts = section(response, "home-services").split("Status")[0]
    assert "degraded 1" in counts
    assert "passing 1" in counts


def test_a_base_url_that_is_not_http_is_never_a_link(payments: Payments):
    found = service("ledger", base_url="http://ledger.internal:8001")
    Service.objects.filter(pk=found.pk).update(base_url="javascript:alert(1)")

    body = logged_in("viewer").get(HOME).content.decode()

    assert "javascript:" not in body


# ------------------------------------------------------------------------------------------- payments


def test_payments_of_the_last_hour_and_day_by_status_with_amounts_per_currency(payments: Payments):
    response = logged_in("viewer").get(HOME)

    tile = section(response, "home-payments")
    assert "4 created in the last hour" in tile
    assert "44 created in the last day" in tile
    settled = section(response, "home-payments-settled")
    assert "settled 3 40.00 EUR 7.00 USD 43 12,345.67 EUR 90,000 JPY" in settled
    assert "failed 1 0.99 EUR 1 0.99 EUR" in section(response, "home-payments-failed")
    # read with the portal's own identity: one token for audience payments, then a call per window with it
    [token] = payments.tokens.calls()
    form = dict(urllib.parse.parse_qsl(token.body.decode()))
    assert (form["grant_type"], form["client_id"], form["audience"]) == (
        "client_credentials",
        PORTAL_CLIENT,
        "payments",
    )
    assert sorted(c.path for c in payments.payments.calls()) == [
        "/api/v1/payments/stats?window=1h",
        "/api/v1/payments/stats?window=24h",
    ]


def test_the_token_is_reused_and_the_day_read_at_most_once_a_minute(payments: Payments):
    viewer = logged_in("viewer")
    viewer.get(HOME)
    payments.documents["24h"] = stats("24h", settled={"EUR": (41, 1_234_999)})
    payments.documents["1h"] = stats("1h", settled={"EUR": (3, 4100)})
    again = viewer.get(HOME + "?fragment=1")

    assert len(payments.tokens.calls()) == 1
    # the hour asked both times, the day once: the second page shows the new hour and the kept day
    assert [c.path.rsplit("=", 1)[1] for c in payments.payments.calls()] == ["1h", "24h", "1h"]
    settled = section(again, "home-payments-settled")
    assert "settled 3 41.00 EUR 43 12,345.67 EUR" in settled
    assert "as of 01:00:00 UTC" in section(again, "home-payments-asof")


def test_with_no_day_cache_the_day_is_read_at_every_refresh(payments: Payments, settings: Any):
    settings.HOME_PAYMENTS_DAY_SECONDS = 0
    viewer = logged_in("viewer")
    viewer.get(HOME)
    payments.documents["24h"] = stats("24h", settled={"EUR": (41, 1_234_999)})

    again = viewer.get(HOME + "?fragment=1")

    assert len(payments.payments.calls()) == 4
    assert "41 12,349.99 EUR" in section(again, "home-payments-settled")


def test_when_payments_is_down_the_tile_says_so_and_the_page_still_renders(payments: Payments, settings: Any):
    payments.payments.stop()
    service("ledger", base_url="http://ledger.internal:8001")

    response = logged_in("viewer").get(HOME)

    assert response.status_code == 200
    down = section(response, "home-payments-down")
    assert "Payments is unavailable" in down
    assert "upstream_unavailable" in down
    assert "passing" in section(response, "home-service-ledger")  # the rest of the page is there


def test_when_payments_refuses_the_portal_the_tile_names_the_refusal(payments: Payments):
    payments.status = 403

    response = logged_in("viewer").get(HOME)

    assert "payments answered 403 insufficient_scope" in section(response, "home-payments-down")
    assert len(payments.payments.calls()) == 1  # the first refusal ends the reading


def test_without_machine_credentials_the_tile_says_what_is_missing(payments: Payments, settings: Any):
    settings.ATRIUM_CLIENT_ID = ""

    response = logged_in("viewer").get(HOME)

    assert "PORTAL_CLIENT_ID" in section(response, "home-payments-down")
    assert payments.payments.calls() == []


@pytest.mark.parametrize(
    "document",
    [
        {"statuses": [{"count": 1, "amounts": []}], "count": 1},  # no status
        {"statuses": [{"status": "settled", "count": 1, "amounts": [{"currency": "EUR", "amount": "x"}]}], "count": 1},
        {"statuses": [{"status": "settled", "count": 1, "amounts": [None]}], "count": 1},
        {"statuses": ["settled"], "count": 1},
        {"statuses": [], "count": None},
    ],
)
def test_a_stats_document_not_as_documented_is_said_not_a_500(payments: Payments, document: dict[str, Any]):
    payments.documents["24h"] = {"window": "24h", **document}

    response = logged_in("viewer").get(HOME)

    assert response.status_code == 200
    assert "payments answered an unexpected document" in section(response, "home-payments-down")


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("::not a url", "not a URL"),
        ("http://[::1", "not a URL"),
        ("ftp://payments.internal", "upstream_unavailable"),
        ("", "PAYMENTS_URL is not set"),
    ],
)
def test_a_payments_url_that_cannot_be_called_is_said_not_a_500(payments: Payments, settings: Any, url: str, said: str):
    settings.PAYMENTS_URL = url

    response = logged_in("viewer").get(HOME)

    assert response.status_code == 200
    assert said in section(response, "home-payments-down")


def test_a_refused_portal_secret_is_token_unavailable(payments: Payments, settings: Any):
    settings.ATRIUM_CLIENT_SECRET = "wrong"

    response = logged_in("viewer").get(HOME)

    assert "token_unavailable" in section(response, "home-payments-down")


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (0, "EUR", "0.00 EUR"),
        (5, "EUR", "0.05 EUR"),
        (123_456_789, "EUR", "1,234,567.89 EUR"),
        (1500, "JPY", "1,500 JPY"),
        (1_234, "BHD", "1.234 BHD"),
        (2**63, "USD", "92,233,720,368,547,758.08 USD"),
        (-250, "EUR", "-2.50 EUR"),
        (77, "XTS", "77 XTS (minor units)"),
    ],
)
def test_amounts_are_shown_in_major_units_of_their_currency(amount: int, currency: str, shown: str):
    assert money(amount, currency) == shown


# ------------------------------------------------------------------------------------------- jobs


@pytest.fixture
def broker_queues() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    conn.delete(*QUEUES)  # what earlier tests published on this Redis db would count as backlog
    try:
        yield conn
    finally:
        conn.delete(*QUEUES)
        conn.close()


def test_failing_jobs_and_queue_backlogs(payments: Payments, broker_queues: redis.Redis):
    now = timezone.now()
    for n in range(3):
        _job(state="failed", seen=now - dt.timedelta(minutes=5 + n), exception_type="LedgerDown")
    _job(state="failed", seen=now - dt.timedelta(hours=30), exception_type="Ancient")  # older than a day
    JobMinute.objects.create(minute=now.replace(second=0, microsecond=0), queue="ledger", name="x", failed=3)
    JobMinute.objects.create(minute=now - dt.timedelta(hours=5), queue="ledger", name="x", failed=4)
    message = json.dumps({"headers": {"atrium_published_at": now.timestamp() - 120}})
    broker_queues.lpush("payments", message, message)

    response = logged_in("viewer").get(HOME)

    jobs = section(response, "home-jobs")
    assert "3 failed in the last hour" in jobs
    assert "7 in the last day" in jobs
    assert "2 waiting in the queues" in jobs
    assert "LedgerDown ledger.transaction_post 3" in jobs
    assert "Ancient" not in jobs
    assert "payments 2 2 min" in section(response, "home-queue-payments")
    assert "/admin/jobs/tasks/?state=failed&amp;name=ledger.transaction_post&amp;exception_type=LedgerDown" in (
        response.content.decode()
    )


def test_with_the_broker_away_backlogs_are_unknown_and_the_page_renders(payments: Payments, settings: Any):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    response = logged_in("viewer").get(HOME)

    assert response.status_code == 200
    assert "The broker did not answer" in section(response, "home-queues-error")
    assert "? waiting in the queues" in section(response, "home-jobs")


# ------------------------------------------------------------------------------------------- the page


def test_links_to_every_tool_and_a_search_that_goes_to_the_trace(payments: Payments):
    response = logged_in("auditor").get(HOME)

    tools = re.findall(r'<a href="([^"]+)"', response.content.decode().split('id="home-tools"')[1].split("</ul>")[0])
    assert tools == [
        "/admin/catalog/overview/",
        "/admin/catalog/graph/",
        "/admin/jobs/",
        "/admin/jobs/schedule/",
        "/admin/trace/",
        "/admin/audit/auditevent/",
        "#home-models",
    ]
    form = response.content.decode().split('id="home-search"')[1].split("</form>")[0]
    assert 'action="/admin/trace/"' in form
    assert 'name="q"' in form


def test_the_page_refreshes_its_region_like_the_catalog_pages(payments: Payments):
    viewer = logged_in("viewer")

    page = viewer.get(HOME)
    fragment = viewer.get(HOME + "?fragment=1")

    assert 'data-live-url="/admin/?fragment=1"' in page.content.decode()
    assert fragment["X-Catalog-Fragment"] == "1"
    assert 'id="home-payments"' in fragment.content.decode()
    assert "<html" not in fragment.content.decode()


@pytest.mark.parametrize(
    ("path", "title"),
    [
        (HOME, "Home"),
        ("/admin/catalog/overview/", "Service catalog"),
        ("/admin/jobs/", "Background jobs"),
        ("/admin/jobs/schedule/", "Schedule"),
        ("/admin/trace/", "Trace"),
        ("/admin/audit/auditevent/", "Select audit event to view"),
        ("/admin/identity/machineclient/", "Select machine client to view"),
    ],
)
def test_every_portal_pages_title_names_the_portal(payments: Payments, path: str, title: str):
    body = logged_in("auditor").get(path).content.decode()

    assert f"<title>{title} | Atrium portal</title>" in body


def test_the_login_pages_title_names_the_portal(client: Client):
    assert "<title>Log in | Atrium portal</title>" in client.get("/admin/login/").content.decode()


def test_the_admins_model_list_stays_below_the_tiles_and_out_of_the_fragment(payments: Payments):
    viewer = logged_in("viewer")

    page = viewer.get(HOME).content.decode()
    fragment = viewer.get(HOME + "?fragment=1").content.decode()

    models = page.split('id="home-models"')[1]
    assert 'href="/admin/catalog/service/"' in models
    assert 'href="/admin/jobs/job/"' in models
    assert "/admin/audit/" not in models  # a viewer does not read the audit trail
    assert 'id="home-models"' not in fragment


def test_the_homes_queries_do_not_grow_with_the_services(payments: Payments, django_assert_max_num_queries: Any):
    for n in range(30):
        service(f"svc-{n:02d}", base_url=f"http://svc-{n}.internal")
    auditor = logged_in("auditor")
    auditor.get(HOME)  # warm: sessions, permissions

    with django_assert_max_num_queries(QUERIES_MAX):
        response = auditor.get(HOME)

    assert response.status_code == 200


def _job(*, state: str, seen: dt.datetime, **fields: Any) -> Job:
    return Job.objects.create(
        task_id=f"t-{Job.objects.count()}-{seen.timestamp()}",
        name="ledger.transaction_post",
        service="ledger",
        queue="ledger",
        state=state,
        seen_at=seen,
        queued_at=seen,
        last_event_at=seen,
        finished_at=seen,
        **fields,
    )


def _event(n: int) -> dict[str, Any]:
    return {
        "id": f"evt_home_{n}",
        "service": "ledger",
        "service_seq": n,
        "occurred_at": "2026-11-28T10:00:00.000000Z",
        "action": "ledger.transaction.created",
        "outcome": "success",
        "actor": {"type": "client", "id": "cli_1", "display": "cli_1"},
        "object": {"type": "transaction", "id": f"txn_{n}"},
        "request_id": f"req_{n}",
        "source_ip": "127.0.0.1",
        "user_agent": "test",
        "changes": {},
        "metadata": {},
    }
