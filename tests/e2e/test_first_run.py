"""The README's first run, against a real ``make up`` (embedded PostgreSQL and Redis, a private var directory, free
ports): *Your first payment* pasted as printed makes a payment that settles and whose trace page answers; the
token example works once its default URLs point at this ``make up``; ``./bin/atrium screenshots`` fills a
directory with 1280 px pictures of every page it lists that exists.

The walkthrough reads every URL from ``var/dev-credentials.json`` (``$ATRIUM_VAR_DIR``), so it runs here unchanged
on this ``make up``'s ports. The token example prints the default URLs: the test replaces exactly those (each
must still be in the README, ``tests/readme_run.py``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from devtools.infra import REPO_ROOT
from devtools.screenshots import SHOTS, png_size
from tests.e2e.dev_runner import DemoClient, DevRunner
from tests.harness import wait_until
from tests.readme_run import readme_run, readme_section, shell_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevRunner, dict[str, Any]]]:
    # The embedded PostgreSQL runs as another user when we are root: its data lives outside pytest's temporary
    # directories (as test_hostile's make up does).
    var_dir = Path(settings.ATRIUM_VAR_DIR) / f"first-run-{uuid.uuid4().hex[:8]}"
    runner = DevRunner(var_dir, tmp_path_factory.mktemp("first-run") / "up.log")
    try:
        creds = runner.wait_up(180)
        yield runner, creds
    finally:
        runner.close()
        shutil.rmtree(var_dir, ignore_errors=True)


def admin_session(creds: dict[str, Any]) -> httpx.Client:
    """The demo admin logged in to the portal's admin through its login form."""
    portal = creds["urls"]["portal"]
    client = httpx.Client(base_url=portal, timeout=15)
    client.get("/admin/login/")
    response = client.post(
        "/admin/login/",
        data={
            "username": creds["admin"]["username"],
            "password": creds["admin"]["password"],
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
            "next": "/admin/",
        },
    )
    assert response.status_code == 302, response.text[:2000]
    assert response.headers["location"] == "/admin/"
    return client


def test_your_first_payment_runs_as_printed_and_the_payment_settles(stack: tuple[DevRunner, dict[str, Any]]):
    runner, creds = stack
    demo = DemoClient(creds)

    # when the README's walkthrough is pasted, as printed, into a terminal at the repository's root
    run = readme_run(
        readme_section("first-payment"),
        env=shell_env(ATRIUM_VAR_DIR=str(runner.var_dir)),
        cwd=REPO_ROOT,
        report=("ALICE", "BOB", "PAYMENT", "STATUS", "KEY"),
        timeout=240,
    ).check()

    # then it printed what the README says it prints
    values = run.values
    lines = run.stdout.splitlines()
    assert lines[:3] == ["posted", "10000", values["PAYMENT"]], run.stdout
    assert re.fullmatch(r"pay_[0-9a-z]+", values["PAYMENT"])
    assert lines[3].strip().lower() == "idempotent-replayed: true"
    assert values["STATUS"] == "settled", run.stdout
    statuses = lines[4 : lines.index("settled") + 1]
    assert set(statuses) <= {"created", "screening", "processing", "settled"}
    assert lines[lines.index("settled") + 1] == "7500"
    trace_url = f"{creds['urls']['portal']}/admin/trace/?q={values['PAYMENT']}"
    assert trace_url in lines, run.stdout
    assert any("payments.payment.created" in line for line in lines), run.stdout

    # and step 7 printed the payment's webhooks as the demo receiver got them: every one verified by
    # standardwebhooks, the settled one within a second of the event, then the admin's page
    webhooks = [line.split() for line in lines[lines.index(trace_url) + 1 : -1]]
    assert webhooks, run.stdout
    assert {w[0] for w in webhooks} == {"verified"}, run.stdout
    assert {"payment.created", "payment.settled"} <= {w[1] for w in webhooks}, run.stdout
    assert all(w[2].startswith("msg_") for w in webhooks), run.stdout
    # From the event to the verified delivery: the outcome (settled) within a second; the very first event of a fresh
    # make up (created) also warms every process on its way, so it gets two (0.78-1.12 s seen on a loaded 2-core box).
    lags = {w[1]: float(w[3]) for w in webhooks}
    assert lags["payment.settled"] < 1.0, f"from the event to the verified delivery (s): {lags}"
    assert max(lags.values()) < 2.0, f"from the event to the verified delivery (s): {lags}"
    admin_url = f"{creds['urls']['webhooks']}/admin/webhooks/message/?q={values['PAYMENT']}"
    assert lines[-1] == admin_url
    # and make up's console shows each delivery on one line of the receiver's, verified
    console = [line for line in runner.lines(f"object={values['PAYMENT']}") if " webhook_receiver " in line]
    assert any("verified" in line and "payment.settled" in line for line in console), runner.console()[-4000:]
    assert not any("NOT VERIFIED" in line for line in console), console

    # and the services agree: one payment of 25.00 EUR from Alice to Bob, settled (the replay made no second one)
    payments = demo.http("payments")
    payment = payments.get(f"/api/v1/payments/{values['PAYMENT']}").json()
    assert (payment["status"], payment["amount"], payment["currency"]) == ("settled", 2500, "EUR")
    assert (payment["source_account"], payment["destination_account"]) == (values["ALICE"], values["BOB"])
    assert len(payments.get("/api/v1/payments", params={"account": values["ALICE"]}).json()["results"]) == 1
    reused = payments.post(
        "/api/v1/payments",
        json={
            "amount": 2501,
            "currency": "EUR",
            "source_account": values["ALICE"],
            "destination_account": values["BOB"],
        },
        headers={"Idempotency-Key": values["KEY"]},
    )
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")  # as the README says
    ledger = demo.http("ledger")
    assert ledger.get(f"/api/v1/accounts/{values['ALICE']}").json()["balance"] == 7500
    assert ledger.get(f"/api/v1/accounts/{values['BOB']}").json()["balance"] == 7500

    # and a token lives the 15 minutes the README says
    token = httpx.post(
        f"{creds['urls']['portal']}/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds["client"]["client_id"],
            "client_secret": creds["client"]["client_secret"],
            "audience": "payments",
        },
        timeout=10,
    )
    assert token.json()["expires_in"] == 15 * 60

    # and the trace page it printed answers the admin with the payment's way to settled
    admin = admin_session(creds)

    def traced() -> bool:
        page = admin.get(trace_url)
        assert page.status_code == 200, page.text[:2000]
        return values["PAYMENT"] in page.text and "payments.payment.settled" in page.text

    wait_until(traced, 30, "the trace page to show the settled payment", every=1)

    # and the webhooks admin it printed (signed in through the portal: the demo admin holds the admin role) lists
    # the payment's messages
    page = admin.get(admin_url, follow_redirects=True)
    assert page.status_code == 200, page.text[:2000]
    assert str(page.url) == admin_url, page.url
    assert "payment.settled" in page.text
    assert values["PAYMENT"] in page.text


def test_your_first_payment_runs_in_a_posix_shell_too(stack: tuple[DevRunner, dict[str, Any]]):
    runner, _ = stack

    # when the walkthrough is pasted into a POSIX sh (no bash-only syntax: it reads the same in zsh)
    run = readme_run(
        readme_section("first-payment"),
        env=shell_env(ATRIUM_VAR_DIR=str(runner.var_dir)),
        cwd=REPO_ROOT,
        report=("STATUS",),
        timeout=240,
        shell="sh",
    ).check()

    # then its payment settles as well
    assert run.values["STATUS"] == "settled", run.stdout
    assert "Idempotent-Replayed: true" in run.stdout


def test_the_token_example_works_with_its_default_urls_pointed_at_make_up(stack: tuple[DevRunner, dict[str, Any]]):
    runner, creds = stack
    urls = creds["urls"]

    # when the token example runs with its printed defaults replaced by this make up's URLs and var directory
    run = readme_run(
        readme_section("token-example"),
        env=shell_env(),
        cwd=REPO_ROOT,
        substitutions={
            "http://127.0.0.1:8000": urls["portal"],
            "http://127.0.0.1:8001": urls["ledger"],
            "var/dev-credentials.json": str(runner.var_dir / "dev-credentials.json"),
        },
    ).check()

    # then the ledger answered who the demo client is
    whoami = json.loads(run.stdout)
    assert whoami["client_id"] == creds["client"]["client_id"]
    assert whoami["service"] == "ledger"


@pytest.mark.browser
def test_the_screenshots_tool_saves_every_page_at_1280_px(
    stack: tuple[DevRunner, dict[str, Any]], chromium: Path, tmp_path: Path
):
    runner, _ = stack
    out = tmp_path / "screenshots"

    # when the tool runs against this make up with a few payments
    done = subprocess.run(
        [sys.executable, "-m", "devtools", "screenshots", "--payments", "24", "--out", str(out)],
        cwd=REPO_ROOT,
        env=shell_env(ATRIUM_VAR_DIR=str(runner.var_dir)),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    # then it made them, they settled (those from the empty account failed), and no page was an error
    assert done.returncode == 0, done.stdout + done.stderr
    assert "24 payments created (24 201)" in done.stdout, done.stdout
    assert "still on its way" not in done.stdout
    outcomes = dict(re.findall(r"^  ([\w-]+)\s+(.+)$", done.stdout, re.M))
    assert set(outcomes) == {shot.name for shot in SHOTS}

    # and every page that exists is a picture 1280 px wide (none overflows), the ones this tree has included
    saved = {name for name, outcome in outcomes.items() if outcome.startswith("saved")}
    assert {"home", "catalog-overview", "catalog-graph", "jobs-overview", "jobs-detail", "trace", "audit-list"} <= saved
    assert {"webhooks-endpoints", "webhooks-endpoint", "webhooks-attempts"} <= saved  # a service admin, through SSO
    assert set(outcomes) - saved == {name for name, outcome in outcomes.items() if outcome == "missing (404)"}
    for name in saved:
        width, height = png_size(out / f"{name}.png")
        assert width == 1280, (name, width)
        assert height >= 600, (name, height)
        assert (out / f"{name}.png").stat().st_size > 10_000
