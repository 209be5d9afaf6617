"""Hostile tests, one per hardening rule, against real processes (slow: `make test` runs them in CI).

Each rule is proved with more than one case, and with cases other than the ones that revealed it: several
kinds of poisoned item, several spellings of an inside address, several kinds of malformed body.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from django.conf import settings

from services.kit.models import OutboxEvent
from tests.e2e.dev_runner import DemoClient, DevRunner, alive
from tests.harness import AtriumProcess, ProcessHarness, current_test_database_url, wait_until
from tests.portal.factories import PASSWORD, superuser, user_with_role

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


# ----------------------------------------------------------------------------------------------------------
# 1. Poison isolation: one item never stops a batch


# ----------------------------------------------------------------------------------------------------------
# 2. Identity: revocation and least privilege


# ----------------------------------------------------------------------------------------------------------
# 3. SSRF: one outbound-request guard in the kit


# ----------------------------------------------------------------------------------------------------------
# 4. The audit verifier cannot be stalled


# ----------------------------------------------------------------------------------------------------------
# 5. Bounded input, the same in every service


# ----------------------------------------------------------------------------------------------------------
# 6. Throttled logins
#
# A live portal under gunicorn, as behind one reverse proxy (ATRIUM_PROXY_COUNT=1: the client's address is the
# last X-Forwarded-For entry, which the proxy appends), with a failure limit of 4 from the environment. Each client
# is a cookie jar with its own address that gets the login form's CSRF token as a browser does.

LOGIN_LIMIT = 4
LOGIN_COOL_OFF = 600


@pytest.fixture(scope="module")
def throttled_portal(django_db_setup: None, module_harness: ProcessHarness) -> AtriumProcess:
    env = {"ATRIUM_PROXY_COUNT": "1", "AXES_FAILURE_LIMIT": str(LOGIN_LIMIT), "AXES_COOLOFF_SECONDS": "600"}
    return module_harness.web("portal", database_url=current_test_database_url(), env=env)


class AdminVisitor:
    """Someone using the live admin from one address: cookies, CSRF tokens from the pages, the real forms."""

    def __init__(self, url: str, address: str | None) -> None:
        self.address = address
        self.http = httpx.Client(base_url=url, timeout=15, follow_redirects=False)

    def _headers(self, address: str | None, extra: dict[str, str]) -> dict[str, str]:
        # What the proxy passes on: whatever the client claimed, then the address it saw (none: no proxy).
        forwarded = address or self.address
        return {**({"X-Forwarded-For": forwarded} if forwarded else {}), **extra}

    def csrf(self, path: str, address: str | None = None) -> str:
        page = self.http.get(path, headers=self._headers(address, {}))
        assert page.status_code == 200, (path, page.status_code, page.text[:500])
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert match, page.text[:2000]
        return match.group(1)

    def post_form(self, path: str, data: dict[str, Any], address: str | None = None, **headers: str) -> httpx.Response:
        token = self.csrf(path, address)
        return self.http.post(
            path, data={"csrfmiddlewaretoken": token, **data}, headers=self._headers(address, headers)
        )

    def login(self, username: str, password: str, address: str | None = None, **headers: str) -> httpx.Response:
        body = {"username": username, "password": password, "next": "/admin/"}
        return self.post_form("/admin/login/", body, address, **headers)

    def in_admin(self) -> bool:
        return self.http.get("/admin/", headers=self._headers(None, {})).status_code == 200


def audit_events(action: str) -> list[dict[str, Any]]:
    rows = OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")
    return [r.payload for r in rows if r.payload["action"] == action]


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text[:1000]
    assert response.headers["content-type"].startswith("text/html")
    assert "Too many failed logins" in response.text
    assert response.headers["retry-after"] == str(LOGIN_COOL_OFF)
    assert "sessionid" not in response.cookies


def test_hostile_admin_logins_lock_out_a_username_until_an_operator_unlocks_it(throttled_portal: AtriumProcess):
    # given a staff user and an operator
    superuser(username="alice")
    user_with_role("operator", username="opal")
    attacker = AdminVisitor(throttled_portal.url, "198.51.100.1")

    # when wrong passwords for alice come from a new address each time, up to the limit
    for i in range(1, LOGIN_LIMIT):
        response = attacker.login("alice", "guess-" + str(i), address=f"198.51.100.{i}")
        assert response.status_code == 200  # the form again, with its error
        assert "errornote" in response.text
    last = attacker.login("alice", "guess-last", address=f"198.51.100.{LOGIN_LIMIT}")

    # then alice is locked out: the right password is refused from anywhere, as a page or as problem+json
    assert_refused(last)
    alice = AdminVisitor(throttled_portal.url, "192.0.2.10")
    assert_refused(alice.login("alice", PASSWORD))
    as_json = alice.login("alice", PASSWORD, Accept="application/json")
    assert as_json.status_code == 429
    assert as_json.headers["content-type"] == "application/problem+json"
    assert as_json.json()["code"] == "login_locked_out"
    assert not alice.in_admin()

    # and the lockout was audited once, with the failure that reached the limit (every attempt is a failed login)
    (locked,) = audit_events("auth.login.locked_out")
    assert locked["object"] == {"type": "username", "id": "alice"}
    assert locked["metadata"]["ip_address"] == f"198.51.100.{LOGIN_LIMIT}"
    assert locked["metadata"]["failure_limit"] == LOGIN_LIMIT
    assert len(audit_events("auth.login.failed")) == LOGIN_LIMIT + 2

    # when an operator logs in and unlocks alice on the unlock page
    operator = AdminVisitor(throttled_portal.url, "203.0.113.10")
    assert operator.login("opal", PASSWORD).status_code == 302
    unlocked = operator.post_form("/admin/axes/accessattempt/unlock/", {"username": "alice", "ip_address": ""})
    assert unlocked.status_code == 302, unlocked.text[:2000]

    # then alice's right password works again, and the unlock names the operator
    response = alice.login("alice", PASSWORD)
    assert response.status_code == 302
    assert response.headers["location"] == "/admin/"
    assert alice.in_admin()
    (event,) = audit_events("auth.login.unlocked")
    assert event["actor"]["display"] == "opal"
    assert event["object"] == {"type": "username", "id": "alice"}


def test_hostile_admin_logins_lock_out_an_address_whatever_it_claims_and_spells(throttled_portal: AtriumProcess):
    # given a staff user and an operator
    superuser(username="alice")
    user_with_role("operator", username="opal")
    # and one client spraying usernames, claiming another address each time (the proxy appends the real one, in
    # one of its spellings)
    spellings = ["2001:db8::66", "2001:DB8:0::66", "2001:0db8:0000:0000:0000:0000:0000:0066", "2001:db8:0:0:0:0:0:66"]
    sprayer = AdminVisitor(throttled_portal.url, spellings[0])
    for i, (username, spelling) in enumerate(zip(["root", "admin", "ops", "alice"], spellings, strict=True)):
        response = sprayer.login(username, "Winter2024!", address=f"10.0.{i}.1, {spelling}")
        assert response.status_code == (200 if i < LOGIN_LIMIT - 1 else 429)

    # then nobody logs in from that address, not even alice with her password
    assert_refused(sprayer.login("alice", PASSWORD, address=f"192.0.2.1, {spellings[1]}"))
    # and from the next address she does (her username is not locked: one failure)
    elsewhere = AdminVisitor(throttled_portal.url, "2001:db8::67")
    assert elsewhere.login("alice", PASSWORD).status_code == 302
    (locked,) = audit_events("auth.login.locked_out")
    assert locked["object"] == {"type": "address", "id": "2001:db8::66"}

    # when an operator selects the address's attempts in the list and runs "unlock the addresses"
    operator = AdminVisitor(throttled_portal.url, "203.0.113.11")
    assert operator.login("opal", PASSWORD).status_code == 302
    listing = operator.http.get(
        "/admin/axes/accessattempt/", params={"q": "2001:db8::66"}, headers=operator._headers(None, {})
    )
    selected = re.findall(r'name="_selected_action" value="(\d+)"', listing.text)
    assert selected, listing.text[:2000]
    response = operator.post_form(
        "/admin/axes/accessattempt/", {"action": "unlock_addresses", "_selected_action": selected[:1], "index": "0"}
    )
    assert response.status_code == 302, response.text[:2000]

    # then logins from the address are accepted again, and the unlock is audited
    assert sprayer.login("alice", PASSWORD, address=spellings[2]).status_code == 302
    (event,) = audit_events("auth.login.unlocked")
    assert event["object"] == {"type": "address", "id": "2001:db8::66"}
    assert event["actor"]["display"] == "opal"


def test_hostile_admin_logins_in_parallel_are_one_lockout(throttled_portal: AtriumProcess):
    # given a staff user
    superuser(username="carol")

    # when three times the limit of wrong passwords for her arrive at once, each from its own address
    def attempt(i: int) -> int:
        visitor = AdminVisitor(throttled_portal.url, f"198.18.0.{i + 1}")
        return visitor.login("carol", f"parallel-{i}").status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(attempt, range(3 * LOGIN_LIMIT)))

    # then some got the form and the rest the lockout, and the lockout was recorded exactly once
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) <= LOGIN_LIMIT - 1
    (locked,) = audit_events("auth.login.locked_out")
    assert locked["object"] == {"type": "username", "id": "carol"}
    assert_refused(AdminVisitor(throttled_portal.url, "198.18.1.1").login("carol", PASSWORD))


def test_hostile_admin_lockout_ends_by_itself_after_the_cool_off(harness: ProcessHarness):
    # given a portal with a short cool-off, reached directly (the address is the connection's)
    env = {"AXES_FAILURE_LIMIT": "3", "AXES_COOLOFF_SECONDS": "3"}
    portal = harness.web("portal", database_url=current_test_database_url(), env=env)
    superuser(username="alice")
    visitor = AdminVisitor(portal.url, None)
    for _ in range(3):
        visitor.login("alice", "wrong password")

    # when alice's right password comes during the cool-off, it is refused (and the cool-off starts again)
    refused = visitor.login("alice", PASSWORD)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "3"
    assert len(audit_events("auth.login.locked_out")) == 2  # the username and the address (127.0.0.1)

    # then once the cool-off has passed since that last failure, it works
    time.sleep(3.5)
    assert visitor.login("alice", PASSWORD).status_code == 302
    assert visitor.in_admin()


# ----------------------------------------------------------------------------------------------------------
# 7. The dev runner keeps going when one process dies
#
# One `make up` on embedded PostgreSQL and Redis (a private ATRIUM_VAR_DIR, free ports) for the section; each kill
# is checked against the supervisor's console, the catalog, a payment settling end to end, and the pids of every
# other process. The last test is the Ctrl-C.

RESTART_BOUND = 60  # seconds from a kill to the process serving again (1 s backoff, then its own start-up)


@pytest.fixture(scope="module")
def dev_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevRunner, DemoClient]]:
    # The embedded PostgreSQL runs as another user when we are root: its data lives outside pytest's temporary
    # directories, which any pytest run of the same user may make private again at any time.
    var_dir = Path(settings.ATRIUM_VAR_DIR) / f"dev-runner-{uuid.uuid4().hex[:8]}"
    runner = DevRunner(var_dir, tmp_path_factory.mktemp("dev-runner") / "up.log")
    try:
        creds = runner.wait_up(180)
        yield runner, DemoClient(creds)
    finally:
        runner.close()
        shutil.rmtree(var_dir, ignore_errors=True)


def _kill_and_watch_it_come_back(runner: DevRunner, name: str) -> tuple[int, int]:
    """SIGKILL the process ``name``; its old and new pid once the supervisor has restarted it. The others must
    keep their pids (the same processes: pid and start time)."""
    before = runner.pids()
    assert len(before) == 12, before
    others = {n: psutil.Process(pid) for n, pid in before.items() if n != name}
    assert all(alive(p) for p in others.values())
    old = before[name]

    os.kill(old, signal.SIGKILL)

    line = wait_until(lambda: runner.lines(f"{name} (pid {old}) was killed by SIGKILL"), 15, f"{name}'s exit line")
    assert "restarting it in 1 s" in line[0], line
    new = wait_until(lambda: runner.pids()[name] != old and runner.pids()[name], 20, f"{name} to start again")
    assert runner.lines(f"{name} started again (restart 1) (pid {new})")
    assert {n: p for n, p in runner.pids().items() if n != name} == {n: p.pid for n, p in others.items()}
    assert all(alive(p) for p in others.values())
    return old, new


@pytest.mark.timeout(600)  # make up's start-up is part of the first test
def test_hostile_make_up_restarts_a_killed_worker_and_nothing_else_stops(
    dev_runner: tuple[DevRunner, DemoClient],
):
    runner, demo = dev_runner
    # given make up serving payments
    demo.payment_settles(60)

    # when the payments worker is killed, the supervisor says so and starts it again at once
    started = time.monotonic()
    old, new = _kill_and_watch_it_come_back(runner, "worker_payments")

    # then it is back: it registers with the catalog, and a new payment settles through it
    wait_until(lambda: demo.instance_heartbeats("worker-payments", new), RESTART_BOUND, "the new worker's heartbeat")
    demo.payment_settles(RESTART_BOUND)
    assert time.monotonic() - started < 2 * RESTART_BOUND
    # and nothing was stopped: not the other processes (same pids, checked above), not the embedded servers
    assert old != new
    assert not runner.lines("| stopping ")
    assert _ready(f"http://127.0.0.1:{runner.ports['portal']}")


@pytest.mark.timeout(600)
def test_hostile_make_up_restarts_a_killed_web_server_and_nothing_else_stops(
    dev_runner: tuple[DevRunner, DemoClient],
):
    runner, demo = dev_runner
    ledger = f"http://127.0.0.1:{runner.ports['ledger']}"
    # given the ledger's gunicorn master and its worker
    master = psutil.Process(runner.pids()["ledger"])
    workers = master.children()
    assert workers

    # when the master is killed (its worker left orphaned, holding the port)
    old, new = _kill_and_watch_it_come_back(runner, "ledger")

    # then the orphaned worker is gone, the new server answers on the same port, registers, and payments get through
    wait_until(lambda: not any(alive(w) for w in workers), 10, "the old server's worker to be killed")
    wait_until(lambda: _ready(ledger), RESTART_BOUND, "the ledger to be ready again")
    wait_until(lambda: demo.instance_heartbeats("ledger", new), RESTART_BOUND, "the new ledger's heartbeat")
    demo.payment_settles(RESTART_BOUND)
    assert old != new


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.timeout(600)
def test_hostile_make_up_ctrl_c_stops_every_process_it_started(dev_runner: tuple[DevRunner, DemoClient]):
    runner, _ = dev_runner
    # given everything make up started: its processes (and their children) and the embedded servers
    started = runner.processes()
    assert set(runner.pids().values()) <= {p.pid for p in started}
    assert len(started) > 12 + 2  # the runner, 12 processes, their children, PostgreSQL's and Redis's
    names = " ".join(p.name() for p in started)
    assert "postgres" in names
    assert "redis-server" in names

    # when Ctrl-C reaches the runner
    runner.interrupt()

    # then it stops every process and the embedded servers, and exits by itself, cleanly
    assert runner.proc.wait(90) == 0, runner.console()[-3000:]
    wait_until(lambda: not [p for p in started if alive(p)], 10, "every process to be gone")
    assert runner.lines("every process has stopped")
    assert "restarting it in" not in runner.console().split("stopping every process", 1)[1]  # nothing came back
    for port in runner.ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2)


# ----------------------------------------------------------------------------------------------------------
# 8. Fuzzing: see tests/e2e/test_fuzz.py
