"""``./bin/atrium screenshots``: the pictures in ``docs/screenshots`` taken from a real, running ``make up``.

Against the ``make up`` running from this var directory (``ATRIUM_VAR_DIR``, else ``var/``), and only on
127.0.0.1, it makes a bounded number of payments through the API with the demo client (``--payments``, 300 by
default, at most 2,000): a few currencies between funded accounts, a few from an empty account (they fail with
``insufficient_funds``), a few canceled at once. It waits for them to settle, then logs in to the portal's admin
as the demo admin in headless Chromium and saves each page of :data:`SHOTS` at 1280 px wide as
``<out>/<name>.png`` (full page).

The list of pages is :data:`SHOTS`: a name, a path on the portal and what it shows. ``{payment}`` in a path is a
settled payment this run made; ``{task}`` a ``payments.drain`` job that carried payments. A page that answers 404
(not built yet) is reported as missing and skipped, a picture wider than 1280 px as overflowing; ``--strict`` makes
both errors (exit status 1, as for a page that fails).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import struct
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from devtools.infra import REPO_ROOT
from devtools.state import state_read, var_dir_get
from devtools.webhook_receiver import secret_file


@dataclass(frozen=True)
class Shot:
    name: str  # the file: <out>/<name>.png
    path: str  # on the service; {payment}, {task}, {endpoint} and {message} are filled in
    shows: str
    service: str = "portal"  # a service admin signs the demo admin in through the portal (docs/sso.md)


# The pages of the docs, in the order they are taken. Edit freely: a page not built yet is reported missing.
SHOTS: tuple[Shot, ...] = (
    Shot("home", "/admin/", "The portal's home: services, payments, failing jobs, the audit trail's head"),
    Shot("catalog-overview", "/admin/catalog/overview/", "The catalog: every service with its processes"),
    Shot("catalog-service", "/admin/catalog/services/payments/", "A service's page"),
    Shot("catalog-graph", "/admin/catalog/graph/", "The dependency graph of services"),
    Shot("catalog-teams", "/admin/catalog/teams/", "Teams, their on-call and their services"),
    Shot("jobs-overview", "/admin/jobs/", "The job dashboard's overview"),
    Shot("jobs-schedule", "/admin/jobs/schedule/", "The periodic tasks: schedule, last and next run"),
    Shot("jobs-list", "/admin/jobs/tasks/", "The task list"),
    Shot("jobs-detail", "/admin/jobs/tasks/{task}/", "A job that carried payments"),
    Shot("jobs-failures", "/admin/jobs/failures/", "Failures grouped by exception"),
    Shot("trace", "/admin/trace/?q={payment}", "The trace of a payment across services"),
    Shot("audit-list", "/admin/audit/auditevent/", "The audit trail's events"),
    Shot("webhooks-endpoints", "/admin/webhooks/endpoint/", "Webhook endpoints: success rate, last error", "webhooks"),
    Shot(
        "webhooks-endpoint", "/admin/webhooks/endpoint/{endpoint}/change/", "An endpoint and its deliveries", "webhooks"
    ),
    Shot("webhooks-message", "/admin/webhooks/message/{message}/change/", "A message and its deliveries", "webhooks"),
    Shot(
        "webhooks-attempts",
        "/admin/webhooks/attempt/?endpoint_id={endpoint}",
        "The attempt log: the demo receiver's answers",
        "webhooks",
    ),
)

MAX_PAYMENTS = 2000
WIDTH = 1280
LOOPBACK = "127.0.0.1"
CHROMIUM = Path(os.environ.get("ATRIUM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
FINAL = ("settled", "rejected", "failed", "canceled")
# Currencies and their share of the payments; amounts are minor units.
CURRENCIES = (("EUR", 6), ("USD", 3), ("GBP", 1))
CUSTOMERS_PER_CURRENCY = 6
OPENING_BALANCE = 5_000_000  # 50,000.00: the payments below never run an account dry by chance


class Refused(Exception):
    """Why the tool will not run here (exit status 2)."""


@dataclass
class Made:
    """What the payments phase made."""

    ids: list[str] = field(default_factory=list)
    created: Counter[str] = field(default_factory=Counter)  # status code → count
    final: Counter[str] = field(default_factory=Counter)  # final status → count
    seconds: float = 0.0
    settled_id: str | None = None


class Stack:
    """The running ``make up``'s services, driven with the demo client it saved."""

    def __init__(self, creds: dict[str, Any]) -> None:
        self.creds = creds
        self.urls: dict[str, str] = creds["urls"]
        self._clients: dict[str, httpx.Client] = {}

    def api(self, audience: str) -> httpx.Client:
        if audience not in self._clients:
            response = httpx.post(
                f"{self.urls['portal']}/api/v1/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.creds["client"]["client_id"],
                    "client_secret": self.creds["client"]["client_secret"],
                    "audience": audience,
                },
                timeout=10,
            )
            response.raise_for_status()
            token = response.json()["access_token"]
            self._clients[audience] = httpx.Client(
                base_url=self.urls[audience], headers={"Authorization": f"Bearer {token}"}, timeout=15
            )
        return self._clients[audience]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def stack_credentials(var_dir: Path) -> dict[str, Any]:
    """The demo credentials of the ``make up`` running from ``var_dir``, its services on 127.0.0.1 only."""
    if state_read(var_dir) is None:
        raise Refused(f"`make up` is not running from {var_dir}; start it first (or set ATRIUM_VAR_DIR)")
    return credentials_read(var_dir)


def credentials_read(var_dir: Path) -> dict[str, Any]:
    path = var_dir / "dev-credentials.json"
    try:
        creds = json.loads(path.read_text())
        urls = {name: creds["urls"][name] for name in ("portal", "ledger", "payments")}
        secrets = (creds["client"]["client_id"], creds["client"]["client_secret"], creds["admin"]["password"])
        if not all(isinstance(value, str) and value for value in (*urls.values(), *secrets)):
            raise ValueError("a value is missing or not a string")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Refused(f"no usable demo credentials in {path} ({type(exc).__name__}: {exc})") from exc
    for name, url in urls.items():
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname != LOOPBACK:
            raise Refused(f"{name} is at {url}: this tool only drives a `make up` on http://{LOOPBACK}")
    return creds


def payments_make(stack: Stack, *, count: int, seed: int, settle_timeout: float, log: Any = print) -> Made:
    """``count`` payments between funded accounts (a few failing, a few canceled); wait until they are final."""
    made = Made()
    if count == 0:
        return made
    rng = random.Random(seed)  # noqa: S311 (pictures, not secrets)
    started, since = time.monotonic(), dt.datetime.now(dt.UTC).isoformat()
    ledger, payments = stack.api("ledger"), stack.api("payments")
    customers: dict[str, list[str]] = {}
    empty: dict[str, str] = {}
    for currency, _ in CURRENCIES:
        funding = _account(ledger, f"Funding {currency}", currency, allow_negative=True)
        customers[currency] = [
            _account(ledger, f"Customer {currency} {n + 1}", currency) for n in range(CUSTOMERS_PER_CURRENCY)
        ]
        empty[currency] = _account(ledger, f"Empty {currency}", currency)
        postings = [{"account": funding, "direction": "debit", "amount": OPENING_BALANCE * CUSTOMERS_PER_CURRENCY}]
        postings += [{"account": a, "direction": "credit", "amount": OPENING_BALANCE} for a in customers[currency]]
        funded = ledger.post(
            "/api/v1/transactions",
            json={"reference": f"screenshots-{funding}", "description": "Opening balances", "postings": postings},
        )
        _expect(funded, 201, "fund the accounts")

    orders = []
    weights = [w for _, w in CURRENCIES]
    for _ in range(count):
        currency = rng.choices([c for c, _ in CURRENCIES], weights)[0]
        source, destination = rng.sample(customers[currency], 2)
        roll = rng.random()
        if roll < 0.04:
            source = empty[currency]  # fails in the ledger: insufficient_funds
        amount = rng.choice((rng.randint(100, 9_999), rng.randint(10_000, 250_000)))
        order = {"amount": amount, "currency": currency, "source_account": source, "destination_account": destination}
        orders.append((order, 0.04 <= roll < 0.07))  # about 3 % canceled at once

    def create(item: tuple[dict[str, Any], bool]) -> tuple[int, str | None]:
        order, cancel = item
        response = payments.post("/api/v1/payments", json=order, headers={"Idempotency-Key": str(uuid.uuid4())})
        payment_id = response.json().get("id") if response.status_code == 201 else None
        if payment_id and cancel:
            payments.post(f"/api/v1/payments/{payment_id}/cancel")  # 409 once it went on: it settles instead
        return response.status_code, payment_id

    with ThreadPoolExecutor(max_workers=4) as pool:
        for status, payment_id in pool.map(create, orders):
            made.created[str(status)] += 1
            if payment_id:
                made.ids.append(payment_id)
    log(f"atrium screenshots: {len(made.ids)} payments created ({_counts(made.created)}), waiting for them to settle")

    deadline = time.monotonic() + settle_timeout
    while time.monotonic() < deadline:
        waiting = payments.get(
            "/api/v1/payments",
            params={"status": ["created", "screening", "processing"], "created_after": since, "limit": 1},
        )
        _expect(waiting, 200, "list the payments still on their way")
        if not waiting.json()["results"]:
            break
        time.sleep(1)
    for payment_id in made.ids:
        status = payments.get(f"/api/v1/payments/{payment_id}").json()["status"]
        made.final[status if status in FINAL else "still on its way"] += 1
        if status == "settled":
            made.settled_id = payment_id
    made.seconds = time.monotonic() - started
    log(f"atrium screenshots: {_counts(made.final)} after {made.seconds:.0f} s")
    return made


def _account(ledger: httpx.Client, name: str, currency: str, *, allow_negative: bool = False) -> str:
    body = {"name": name, "currency": currency, "normal_balance": "credit", "allow_negative": allow_negative}
    response = ledger.post("/api/v1/accounts", json=body)
    _expect(response, 201, f"open the account {name!r}")
    return response.json()["id"]


def _expect(response: httpx.Response, status: int, doing: str) -> None:
    if response.status_code != status:
        raise RuntimeError(f"could not {doing}: HTTP {response.status_code} {response.text[:500]}")


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counter.most_common()) or "none"


def placeholders(stack: Stack, made: Made, var_dir: Path | None = None) -> dict[str, str]:
    """Values for ``{payment}`` and ``{task}``: what this run made, else the newest the stack has."""
    values: dict[str, str] = {}
    payment = made.settled_id
    if payment is None:
        listed = stack.api("payments").get("/api/v1/payments", params={"status": "settled", "limit": 1})
        results = listed.json().get("results", []) if listed.status_code == 200 else []
        payment = results[0]["id"] if results else None
    if payment:
        values["payment"] = payment
    jobs = stack.api("portal").get(
        "/api/v1/jobs/tasks", params={"name": "payments.drain", "state": "succeeded", "limit": 1}
    )
    results = jobs.json().get("results", []) if jobs.status_code == 200 else []
    if results:
        values["task"] = results[0]["task_id"]
    if "webhooks" in stack.urls:
        values |= _webhooks_values(stack, payment, var_dir)
    return values


def _webhooks_values(stack: Stack, payment: str | None, var_dir: Path | None) -> dict[str, str]:
    """``{endpoint}``: the demo receiver's endpoint (``make up`` wrote it beside the receiver's secret);
    ``{message}``: the payment's settled message (else the newest)."""
    values: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        values["endpoint"] = str(json.loads(secret_file(var_dir or var_dir_get()).read_text())["endpoint"])
    webhooks = stack.api("webhooks")
    query = {"object_id": payment, "type": "payment.settled", "limit": 1} if payment else {"limit": 1}
    found = webhooks.get("/api/v1/messages", params=query)
    messages = found.json().get("results", []) if found.status_code == 200 else []
    if messages:
        values["message"] = messages[0]["id"]
    return values


def shots_resolve(shots: tuple[Shot, ...], values: dict[str, str]) -> list[tuple[Shot, str | None]]:
    """Each shot with its path filled in, or None when a value it needs is missing."""
    resolved = []
    for shot in shots:
        try:
            resolved.append((shot, shot.path.format(**values)))
        except KeyError:
            resolved.append((shot, None))
    return resolved


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    head = path.read_bytes()[:24]
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def capture(creds: dict[str, Any], targets: list[tuple[Shot, str]], out: Path) -> dict[str, str]:
    """Log in as the demo admin in headless Chromium; each target's page at 1280 px wide. Shot name → outcome."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    portal = creds["urls"]["portal"]
    urls: dict[str, str] = creds["urls"]
    outcomes: dict[str, str] = {}
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM) if CHROMIUM.exists() else None, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": WIDTH, "height": 800})
            context.set_default_timeout(20_000)
            page = context.new_page()
            page.goto(f"{portal}/admin/login/?next=/admin/")
            page.fill("input[name=username]", creds["admin"]["username"])
            page.fill("input[name=password]", creds["admin"]["password"])
            page.press("input[name=password]", "Enter")
            page.wait_for_url(lambda url: "/login/" not in url)
            for shot, path in targets:
                base = urls.get(shot.service)
                if base is None:
                    outcomes[shot.name] = f"missing ({shot.service} is not running)"
                    continue
                response = page.goto(f"{base}{path}")  # a service admin signs in at the portal: redirects
                status = response.status if response is not None else 0
                if "/login/" in page.url:
                    outcomes[shot.name] = "error: sent to the login page"
                    continue
                if status == 404:
                    outcomes[shot.name] = "missing (404)"
                    continue
                if status >= 400:
                    outcomes[shot.name] = f"error: HTTP {status}"
                    continue
                with contextlib.suppress(PlaywrightError):  # a page that keeps polling is still worth its picture
                    page.wait_for_load_state("networkidle", timeout=5_000)
                page.wait_for_timeout(300)
                target = out / f"{shot.name}.png"
                page.screenshot(path=str(target), full_page=True)
                width, height = png_size(target)
                outcomes[shot.name] = f"saved {_shown(target)} ({width} x {height} px)"
                if width > WIDTH:
                    outcomes[shot.name] += f", wider than {WIDTH} px: something on the page overflows"
        finally:
            browser.close()
    return outcomes


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _arguments(argv: list[str]) -> argparse.Namespace:
    def bounded(text: str) -> int:
        value = int(text)
        if not 0 <= value <= MAX_PAYMENTS:
            raise argparse.ArgumentTypeError(f"between 0 and {MAX_PAYMENTS}")
        return value

    parser = argparse.ArgumentParser(prog="./bin/atrium screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=bounded, default=300, help=f"payments to make first (0-{MAX_PAYMENTS})")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshots", help="where the PNGs go")
    parser.add_argument("--only", default="", help="comma-separated shot names (default: all)")
    parser.add_argument("--seed", type=int, default=18, help="the payments' random seed")
    parser.add_argument("--settle-timeout", type=float, default=180, help="seconds to wait for the payments")
    parser.add_argument("--strict", action="store_true", help="a missing page (404) is an error")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    names = {shot.name for shot in SHOTS}
    only = [n for n in args.only.split(",") if n]
    unknown = sorted(set(only) - names)
    if unknown:
        print(
            f"atrium screenshots: no such shot {', '.join(unknown)} (known: {', '.join(sorted(names))})",
            file=sys.stderr,
        )
        return 2
    shots = tuple(shot for shot in SHOTS if not only or shot.name in only)
    var_dir = var_dir_get()
    try:
        creds = credentials_read(var_dir) if args.dry_run else stack_credentials(var_dir)
    except Refused as refused:
        print(f"atrium screenshots: {refused}", file=sys.stderr)
        return 2
    portal = creds["urls"]["portal"]
    if args.dry_run:
        print(f"atrium screenshots: would make {args.payments} payments through {creds['urls']['payments']}")
        print(f"atrium screenshots: would log in to {portal}/admin/ as {creds['admin']['username']} and save:")
        for shot in shots:
            base = creds["urls"].get(shot.service, portal)
            print(f"  {shot.name:<18} {base}{shot.path}  ->  {args.out / (shot.name + '.png')}")
        return 0

    stack = Stack(creds)
    try:
        made = payments_make(stack, count=args.payments, seed=args.seed, settle_timeout=args.settle_timeout)
        values = placeholders(stack, made, var_dir)
    finally:
        stack.close()
    targets, outcomes = [], {}
    for shot, path in shots_resolve(shots, values):
        if path is None:
            outcomes[shot.name] = "skipped: nothing to show (no payment, job, endpoint or message to fill its path)"
        else:
            targets.append((shot, path))
    outcomes |= capture(creds, targets, args.out)
    failed = False
    for shot in shots:
        outcome = outcomes[shot.name]
        failed |= outcome.startswith("error") or (
            args.strict and (not outcome.startswith("saved") or "wider" in outcome)
        )
        print(f"  {shot.name:<18} {outcome}")
    return 1 if failed else 0
