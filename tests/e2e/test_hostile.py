"""Hostile tests, one per hardening rule, against real processes (slow: `make test` runs them in CI).

Each rule is proved with more than one case, and with cases other than the ones that revealed it: several
kinds of poisoned item, several spellings of an inside address, several kinds of malformed body.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


# ----------------------------------------------------------------------------------------------------------
# 1. Poison isolation: one item never stops a batch


# ----------------------------------------------------------------------------------------------------------
# 2. Identity: revocation and least privilege


# ----------------------------------------------------------------------------------------------------------
# 3. SSRF: one outbound-request guard in the kit
# A live portal (gunicorn) and its health poller (a Celery worker) allow only 127.0.0.2/32. An attacker with
# catalog:register tries inside addresses in many spellings as health URLs: the ones the portal can judge
# without a lookup are refused at registration, the rest (names, and rows stored before the rule) are blocked
# when polled; a listener on 127.0.0.1 proves nothing was requested, and the portal's own log that it was not
# called either. A service on the allowed address is polled (so the poller did run), and its answer's body is
# kept nowhere. Helpers: tests/e2e/ssrf.py.


@pytest.fixture
def ssrf_portal(harness):
    from tests.e2e.ssrf import hostile_portal_start

    portal = hostile_portal_start(harness)
    try:
        yield portal
    finally:
        portal.attacker.close()
        portal.pages.close()


def test_ssrf_inside_addresses_in_any_spelling_are_refused_or_blocked_and_never_requested(ssrf_portal):
    from portal.catalog.models import HealthCheck, Service
    from tests.harness import wait_until
    from tests.servers import LocalServer

    marker = "INSIDE-ONLY-7f3a"
    inside = LocalServer(lambda seen: (200, {}, f"{marker} instance credentials".encode()))
    allowed = LocalServer(lambda seen: (503, {}, f"{marker} stack trace at 10.0.0.7".encode()), host="127.0.0.2")
    portal_port = int((ssrf_portal.portal.url or "").rsplit(":", 1)[1])
    p = inside.port
    try:
        # given: registrations the portal can judge at once (an address in the URL)
        refused = {
            "loopback": (f"http://127.0.0.1:{p}", f"http://127.0.0.1:{p}/internal", 422, "health_url_blocked"),
            "portal": (
                f"http://127.0.0.1:{portal_port}",
                f"http://127.0.0.1:{portal_port}/api/v1/audit/export",
                422,
                "health_url_blocked",
            ),
            "metadata": (
                "http://169.254.169.254",
                "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                422,
                "health_url_blocked",
            ),
            "mapped": (f"http://[::ffff:127.0.0.1]:{p}", f"http://[::ffff:127.0.0.1]:{p}/", 422, "health_url_blocked"),
            "unspecified": (f"http://0.0.0.0:{p}", f"http://0.0.0.0:{p}/", 422, "health_url_blocked"),
            "v6-any": (f"http://[::]:{p}", f"http://[::]:{p}/", 422, "health_url_blocked"),
            "private": ("http://10.0.0.7:5432", "http://10.0.0.7:5432/", 422, "health_url_blocked"),
            "elsewhere": ("https://ledger.example", f"http://localhost:{p}/internal", 422, "health_url_foreign_host"),
            "decimal": ("https://ledger.example", f"http://2130706433:{p}/", 400, "validation_error"),
            "octal": ("https://ledger.example", f"http://0177.0.0.1:{p}/", 400, "validation_error"),
            "hex": ("https://ledger.example", f"http://0x7f.0.0.1:{p}/", 400, "validation_error"),
            "short": ("https://ledger.example", f"http://127.1:{p}/", 400, "validation_error"),
        }
        for slug, (base_url, health_url, status, code) in refused.items():
            response = ssrf_portal.register(slug, base_url, health_url)
            assert (response.status_code, response.json()["code"]) == (status, code), (slug, response.text)
            assert [e["field"] for e in response.json()["errors"]] == ["health_url"], slug
        assert not Service.objects.filter(slug__in=refused).exists()

        # and names the portal accepts (it resolves them when it polls), plus rows written before the rule
        for slug, url in (("localhost", f"http://localhost:{p}"), ("localhost-upper", f"http://LocalHost:{p}")):
            response = ssrf_portal.register(slug, url, f"{url}/internal")
            assert response.status_code == 201, response.text
        legacy = {
            "legacy-decimal": f"http://2130706433:{p}/",
            "legacy-octal": f"http://0177.0.0.1:{p}/",
            "legacy-hex": f"http://0X7F.0.0.1:{p}/",
            "legacy-short": f"http://127.1:{p}/",
            "legacy-zero": f"http://0:{p}/",
            "legacy-dot": f"http://localhost.:{p}/",
            "legacy-portal": f"http://127.0.0.1:{portal_port}/api/v1/audit/export",
            "legacy-metadata": "http://169.254.169.254/latest/meta-data/",
        }
        for slug, url in legacy.items():
            Service.objects.create(slug=slug, display_name=slug, health_url=url)
        # and a service on the allowed address, answering 503 with a body
        control = ssrf_portal.register("control", allowed.url, f"{allowed.url}/health")
        assert control.status_code == 201, control.text
        blocked = ["localhost", "localhost-upper", *legacy]

        # when the portal's worker polls every health URL
        from workers.celery import app

        app.send_task("portal.catalog_health")
        wait_until(lambda: HealthCheck.objects.count() == len(blocked) + 1, 30, "every health URL checked")

        # then nothing reached the inside listener, nor the portal itself, and the allowed one was asked once
        assert inside.calls() == []
        paths = ssrf_portal.requested_paths()
        assert "/api/v1/catalog/services/control" in paths  # its log has the requests it served
        assert "/api/v1/audit/export" not in paths
        assert [s.path for s in allowed.calls()] == ["/health"]
        stored = {c.service.slug: (c.status, c.http_status, c.error) for c in HealthCheck.objects.select_related()}
        assert stored == {
            **{slug: ("critical", None, "blocked") for slug in blocked},
            "control": ("critical", 503, "status"),
        }

        # and what the API and the pages show is a status code and an error class, never a body
        for slug in [*blocked, "control"]:
            (check,) = ssrf_portal.checks(slug)
            assert (check["http_status"], check["error"]) == stored[slug][1:], slug
            assert set(check) == {"checked_at", "status", "http_status", "latency_ms", "error"}
        for slug in ("localhost", "legacy-metadata", "control"):
            page = ssrf_portal.pages.get(f"/admin/catalog/services/{slug}/")
            assert page.status_code == 200, page.text[:2000]
            assert ">blocked</span>" in page.text or ">status</span>" in page.text, slug
            assert marker not in page.text
            assert "10.0.0.7" not in page.text
        everything = ssrf_portal.attacker.get("/api/v1/catalog/services").text
        assert marker not in everything
        assert marker not in str(list(HealthCheck.objects.values()))
    finally:
        inside.stop()
        allowed.stop()


# ----------------------------------------------------------------------------------------------------------
# 4. The audit verifier cannot be stalled


# ----------------------------------------------------------------------------------------------------------
# 5. Bounded input, the same in every service


# ----------------------------------------------------------------------------------------------------------
# 6. Throttled logins


# ----------------------------------------------------------------------------------------------------------
# 7. The dev runner keeps going when one process dies


# ----------------------------------------------------------------------------------------------------------
# 8. Fuzzing: see tests/e2e/test_fuzz.py
