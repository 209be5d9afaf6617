"""The audit trail in the admin: read-only for everyone, never a COUNT(*) over the table, proofs that verify,
and every look at it recorded."""

from __future__ import annotations

import base64
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from portal.audit import admin as audit_admin
from portal.audit import pages, selectors
from portal.audit import standalone_verifier as verifier
from portal.audit.chain import ingest
from portal.audit.heads import head_sign, key_id, signing_key
from portal.audit.models import AuditChainState, AuditEvent, AuditHead, AuditRejected
from services.kit.models import OutboxEvent
from tests.portal.factories import superuser, user_with_role

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/audit/auditevent/"
HEADS_URL = "/admin/audit/audithead/"
REJECTED_URL = "/admin/audit/auditrejected/"


def detail_url(seq: int) -> str:
    return f"/admin/audit/auditevent/{seq}/change/"


def make_event(service: str, n: int, **extra) -> dict:
    return {
        "id": f"evt_{service}_{n}",
        "service": service,
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
        "metadata": {"n": n},
        **extra,
    }


def seqs(response) -> list[int]:
    return [event.seq for event in response.context["cl"].result_list]


def audit_rows(action: str) -> list[dict]:
    return [e.payload for e in OutboxEvent.objects.filter(topic="audit") if e.payload["action"] == action]


def audit_event_queries(captured) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if "audit_event" in q["sql"]]


@pytest.fixture
def chain() -> AuditHead:
    """Eight events (seq 1-8), the first six signed by a head; some with changes, a failure, a user actor."""
    ingest(
        [
            make_event("ledger", 1),
            make_event("ledger", 2, changes={"name": ["old", "new"], "limit": [100, 250]}),
            make_event("ledger", 3, outcome="failure", action="ledger.transaction.rejected"),
            make_event(
                "payments",
                1,
                action="payments.refund.created",
                actor={"type": "user", "id": "7", "display": "alice"},
                object={"type": "refund", "id": "rf_1"},
                request_id="req_shared",
            ),
            make_event("payments", 2, action="payments.refund.approved", request_id="req_shared"),
            make_event("payments", 3, changes={"status": [None, "settled"]}, metadata={"note": "ok", "n": 3}),
        ]
    )
    head = head_sign()
    ingest([make_event("webhooks", 1), make_event("webhooks", 2)])
    return head


@pytest.fixture
def auditor(client):
    client.force_login(user_with_role("auditor"))
    return client


# ------------------------------------------------------------------------------ the list


def test_auditor_sees_every_event_newest_first_under_a_verified_head_banner(chain, auditor):
    response = auditor.get(LIST_URL)

    assert response.status_code == 200
    assert seqs(response) == [8, 7, 6, 5, 4, 3, 2, 1]
    page = response.content.decode()
    banner = page[page.index('id="audit-status"') : page.index("</div>", page.index('id="audit-status"'))]
    assert "audit-status-ok" in page
    assert "Signature verified" in banner
    assert "Matches the chain" in banner
    assert '<strong id="audit-head-size">6</strong>' in banner
    assert chain.root_hash in banner
    assert "2 newer events (chain size 8) not yet covered" in banner
    assert "manage.py audit_verify" in banner
    # no bulk actions at all, not even delete_selected
    assert 'name="action"' not in page
    assert "delete_selected" not in page
    assert "Add audit event" not in page


def test_filters_narrow_the_list(chain, auditor):
    assert seqs(auditor.get(LIST_URL, {"outcome": "failure"})) == [3]
    assert seqs(auditor.get(LIST_URL, {"service": "payments"})) == [6, 5, 4]
    assert seqs(auditor.get(LIST_URL, {"actor_type": "user"})) == [4]
    assert seqs(auditor.get(LIST_URL, {"service": "ledger", "outcome": "success"})) == [2, 1]
    # the detail page's links: by request, actor, object
    assert seqs(auditor.get(LIST_URL, {"request_id": "req_shared"})) == [5, 4]
    assert seqs(auditor.get(LIST_URL, {"actor_id": "7"})) == [4]
    assert seqs(auditor.get(LIST_URL, {"object_type": "refund", "object_id": "rf_1"})) == [4]


def test_exact_lookups_from_the_event_page_are_shown_and_counted_as_filters(chain, auditor):
    response = auditor.get(LIST_URL, {"request_id": "req_shared"})

    page = response.content.decode()
    assert '<p id="audit-lookups">Only events where <code>request_id = req_shared</code>' in page
    assert "2 results" in page
    assert "audit-lookups" not in auditor.get(LIST_URL).content.decode().split("</style>")[1]


def test_service_filter_offers_each_service_once(chain, auditor):
    response = auditor.get(LIST_URL)

    spec = next(s for s in response.context["cl"].filter_specs if s.parameter_name == "service")
    assert [value for value, _ in spec.lookup_choices] == ["ledger", "payments", "webhooks"]


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("evt_payments_2", [5]),  # event id
        ("req_shared", [5, 4]),  # request id
        ("rf_1", [4]),  # object id
        ("txn_3", [6, 3]),  # object id shared by two services
        ("alice", []),  # not an id: display names are not searched
        ("7", [7, 4]),  # actor id 7, and seq 7
        ("#6", [6]),  # sequence number
        ("payments.refund", [5, 4]),  # action prefix
        ("refund", []),  # never a substring match
        ("xn_3", []),
    ],
)
def test_search_is_exact_or_an_action_prefix(chain, auditor, term, expected):
    assert seqs(auditor.get(LIST_URL, {"q": term})) == expected


@pytest.mark.parametrize(
    "params",
    [
        {"metadata__n": "1"},
        {"canonical__contains": "ledger"},
        {"action__icontains": "refund"},
        {"object_id": "rf_1"},  # without object_type no index serves it
        {"actor_display": "alice"},
    ],
)
def test_lookups_that_would_scan_the_table_are_refused(chain, auditor, params):
    assert auditor.get(LIST_URL, params).status_code == 400


def test_the_list_has_one_order_and_ignores_sort_requests(chain, auditor):
    response = auditor.get(LIST_URL, {"o": "3"})  # would sort by service

    assert response.status_code == 200
    assert seqs(response) == [8, 7, 6, 5, 4, 3, 2, 1]
    assert "sortable" not in response.content.decode()


# ------------------------------------------------------------------------ cheap at scale


def test_unfiltered_list_never_counts_or_offsets_audit_event(auditor):
    ingest([make_event("ledger", n) for n in range(1, 121)])
    head_sign()

    with CaptureQueriesContext(connection) as first:
        response = auditor.get(LIST_URL)
    assert response.status_code == 200
    assert seqs(response) == list(range(120, 70, -1))
    with CaptureQueriesContext(connection) as last:
        response = auditor.get(LIST_URL, {"p": "3"})
    assert seqs(response) == list(range(20, 0, -1))

    for captured in (first, last):
        queries = audit_event_queries(captured)
        assert queries
        assert not [q for q in queries if "COUNT(" in q.upper()], queries
        assert not [q for q in queries if "OFFSET" in q.upper()], queries
        assert not [q for q in queries if "DISTINCT" in q.upper()], queries
    # the count is exact anyway: seq is gapless
    assert response.context["cl"].result_count == 120
    assert "120 audit events" in response.content.decode()


def test_filtered_count_stops_at_the_cap(chain, auditor, monkeypatch):
    monkeypatch.setattr(pages.EstimatedCountPaginator, "cap", 3)
    monkeypatch.setattr(audit_admin.AuditEventAdmin, "list_per_page", 2)

    with CaptureQueriesContext(connection) as captured:
        response = auditor.get(LIST_URL, {"outcome": "success"})

    assert response.status_code == 200
    paginator = response.context["cl"].paginator
    assert paginator.capped
    assert paginator.count == 3
    assert seqs(response) == [8, 7]
    counts = [q for q in audit_event_queries(captured) if "COUNT(" in q.upper()]
    assert len(counts) == 1
    assert "LIMIT 4" in counts[0]
    assert "more than 3" in response.content.decode()


def test_heads_and_rejected_lists_use_estimates_not_counts_when_large(chain, auditor, monkeypatch):
    monkeypatch.setattr(selectors, "table_estimate", lambda table: 5_000_000)

    response = auditor.get(HEADS_URL)

    assert response.status_code == 200
    assert response.context["cl"].paginator.estimated
    assert "about 5000000 audit heads" in response.content.decode()


# ---------------------------------------------------------------------------- read-only


@pytest.fixture(params=["superuser", "admin", "auditor"])
def privileged(request, client):
    user = superuser() if request.param == "superuser" else user_with_role(request.param)
    client.force_login(user)
    return client


def test_nobody_can_add_change_or_delete_audit_rows(chain, privileged):
    event = AuditEvent.objects.get(seq=2)
    head = AuditHead.objects.get()
    rejected = AuditRejected.objects.create(reason="test", payload={"id": "x"})
    before = list(AuditEvent.objects.order_by("seq").values_list("seq", "action", "hash"))

    assert privileged.get(LIST_URL).status_code == 200
    assert privileged.get(detail_url(2)).status_code == 200
    for base, pk in ((LIST_URL, event.pk), (HEADS_URL, head.pk), (REJECTED_URL, rejected.pk)):
        assert privileged.get(f"{base}add/").status_code == 403
        assert privileged.post(f"{base}add/", {"action": "x"}).status_code == 403
        assert privileged.post(f"{base}{pk}/change/", {"action": "tampered", "_save": "Save"}).status_code == 403
        assert privileged.get(f"{base}{pk}/delete/").status_code == 403
        assert privileged.post(f"{base}{pk}/delete/", {"post": "yes"}).status_code == 403
    # the bulk delete action does not exist
    response = privileged.post(LIST_URL, {"action": "delete_selected", "_selected_action": ["1", "2"], "post": "yes"})
    assert response.status_code in (200, 302)

    assert list(AuditEvent.objects.order_by("seq").values_list("seq", "action", "hash")) == before
    assert AuditHead.objects.count() == 1
    assert AuditRejected.objects.filter(pk=rejected.pk).exists()


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_roles_without_audit_access_are_refused_and_the_attempt_is_recorded(chain, client, role):
    user = user_with_role(role)
    client.force_login(user)

    assert client.get(LIST_URL).status_code == 403
    assert client.get(detail_url(2)).status_code == 403

    listed, viewed = audit_rows("audit.admin.listed"), audit_rows("audit.admin.viewed")
    assert [(e["outcome"], e["actor"]["display"]) for e in listed] == [("failure", user.get_username())]
    assert [(e["outcome"], e["object"]["id"]) for e in viewed] == [("failure", "evt_ledger_2")]


# ----------------------------------------------------------------------------- the event


def test_event_page_shows_the_diff_metadata_hashes_and_a_verified_proof(chain, auditor):
    event = AuditEvent.objects.get(seq=2)

    response = auditor.get(detail_url(2))

    assert response.status_code == 200
    page = response.content.decode()
    changes = page[page.index('id="audit-changes"') : page.index("</table>", page.index('id="audit-changes"'))]
    rows = re.findall(r"<tr>\s*<th scope=\"row\"><code>(\w+)</code></th>(.*?)</tr>", changes, re.S)
    cells = {name: re.findall(r"<td[^>]*>(.*?)</td>", body, re.S) for name, body in rows}
    assert cells == {"name": ["old", "new"], "limit": ["100", "250"]}
    assert '<strong id="proof-status" class="audit-ok">&#10004; verified</strong>' in page or (
        'id="proof-status" class="audit-ok">✔ verified' in page
    )
    proof = response.context["proof"]
    assert proof.verified
    assert proof.head.tree_size == 6
    assert len(proof.path) == 3  # leaf 1 of 6: sibling leaf, [2,4), [4,6)
    assert bytes(event.hash).hex() in page
    assert bytes(event.prev_hash).hex() in page
    assert bytes(event.leaf_hash).hex() in page
    assert f'href="{LIST_URL}?request_id=req_2"' in page
    assert f'href="{LIST_URL}?actor_id=cli_1"' in page
    assert f'href="{LIST_URL}?object_type=transaction&amp;object_id=txn_2"' in page
    assert "&quot;n&quot;: 2" in page  # metadata, pretty-printed
    assert response.context["chain_link_ok"]
    assert response.context["mismatches"] == []


def test_absent_values_in_a_diff_are_marked(chain, auditor):
    page = auditor.get(detail_url(6)).content.decode()

    assert '<td class="audit-before"><span class="audit-absent">(none)</span></td>' in page
    assert '<td class="audit-after">settled</td>' in page
    assert "&quot;note&quot;: &quot;ok&quot;" in page


def test_event_after_the_latest_head_is_not_yet_covered(chain, auditor):
    response = auditor.get(detail_url(8))

    assert response.status_code == 200
    assert "not yet covered by a signed head" in response.content.decode()
    assert not response.context["proof"].covered
    assert 'id="audit-changes"' not in response.content.decode()
    assert "No field changes recorded." in response.content.decode()


def test_event_page_of_a_missing_event_redirects(chain, auditor):
    assert auditor.get(detail_url(999)).status_code == 302


def test_event_page_is_read_only(chain, auditor):
    page = auditor.get(detail_url(2)).content.decode()

    assert "<form" not in page.split('id="content-main"')[1]
    assert 'name="_save"' not in page


# ------------------------------------------------------------------- tampering detected


def _signed_head(tree_size: int, root_hash: str, last_hash: str) -> AuditHead:
    head = {"tree_size": tree_size, "root_hash": root_hash, "last_hash": last_hash, "timestamp": "2026-11-28T11:00:00Z"}
    signature = base64.b64encode(signing_key().sign(verifier.head_message(head))).decode()
    return AuditHead.objects.create(**head, signature=signature, key_id=key_id())


def test_banner_flags_a_head_whose_signature_does_not_verify(chain, auditor):
    state = AuditChainState.objects.get()
    good = _signed_head(8, "00" * 32, bytes(state.last_hash).hex())
    forged = base64.b64encode(b"x" * 64).decode()
    AuditHead.objects.create(
        tree_size=9, root_hash=good.root_hash, last_hash=good.last_hash, timestamp=good.timestamp, signature=forged
    )

    page = auditor.get(LIST_URL).content.decode()

    assert "audit-status-bad" in page
    assert "Signature NOT verified" in page
    assert "fewer than the 9 the head signs" in page


def test_banner_flags_a_signed_head_that_the_chain_no_longer_matches(chain, auditor):
    state = AuditChainState.objects.get()
    _signed_head(8, "ab" * 32, bytes(state.last_hash).hex())

    response = auditor.get(LIST_URL)
    page = response.content.decode()

    assert "Signature verified" in page
    assert "Does NOT match the chain" in page
    assert "Merkle root at size 8 is not the head&#x27;s root hash" in page
    assert not response.context["audit_status"].ok


def test_event_proof_against_a_forged_head_is_not_verified(chain, auditor):
    forged = base64.b64encode(b"x" * 64).decode()
    AuditHead.objects.create(
        tree_size=8, root_hash="ab" * 32, last_hash="cd" * 32, timestamp="2026-11-28T11:00:00Z", signature=forged
    )

    response = auditor.get(detail_url(2))

    assert not response.context["proof"].verified
    page = response.content.decode()
    assert "NOT verified" in page
    assert "inclusion path does not lead to the head" in page
    assert "forged head" in page


def test_banner_without_any_signed_head(auditor):
    ingest([make_event("ledger", 1)])

    page = auditor.get(LIST_URL).content.decode()

    assert "audit-status-none" in page
    assert "No signed tree head yet" in page


# --------------------------------------------------------------------- looking is audited


def test_listing_and_viewing_are_recorded_as_audit_events(chain, client):
    user = user_with_role("auditor")
    client.force_login(user)

    assert client.get(LIST_URL, {"outcome": "failure", "q": "ledger"}).status_code == 200
    assert client.get(detail_url(2)).status_code == 200

    (listed,) = audit_rows("audit.admin.listed")
    assert listed["outcome"] == "success"
    assert listed["object"] == {"type": "audit_log", "id": "audit_event"}
    assert listed["metadata"] == {"filters": {"outcome": "failure"}, "search": "ledger", "page": ""}
    assert listed["actor"] == {"type": "user", "id": str(user.pk), "display": user.get_username()}
    (viewed,) = audit_rows("audit.admin.viewed")
    assert viewed["outcome"] == "success"
    assert viewed["object"] == {"type": "audit_event", "id": "evt_ledger_2"}
    assert viewed["metadata"] == {"seq": 2}
    assert viewed["actor"]["display"] == user.get_username()


# ------------------------------------------------------------------- heads and rejections


def test_heads_and_rejections_are_listed_and_viewable(chain, auditor):
    rejected = AuditRejected.objects.create(reason="service_seq is missing", payload={"id": "evt_bad"})

    heads_page = auditor.get(HEADS_URL)
    assert heads_page.status_code == 200
    assert chain.root_hash in heads_page.content.decode()
    head_page = auditor.get(f"{HEADS_URL}{chain.tree_size}/change/")
    assert head_page.status_code == 200
    assert chain.signature in head_page.content.decode()
    assert 'alt="True"' in head_page.content.decode()  # signature valid

    assert "service_seq is missing" in auditor.get(REJECTED_URL).content.decode()
    rejected_page = auditor.get(f"{REJECTED_URL}{rejected.pk}/change/")
    assert rejected_page.status_code == 200
    assert "&quot;id&quot;: &quot;evt_bad&quot;" in rejected_page.content.decode()


def test_the_list_shows_times_to_the_second_and_each_object_whole(chain, auditor):
    html = auditor.get(LIST_URL).content.decode()

    assert '<time datetime="2026-11-28T10:00:00+00:00" title="2026-11-28T10:00:00.000000+00:00">' in html
    assert "2026-11-28 10:00:00</time>" in html
    assert "Nov. 28, 2026" not in html
    # the object's type and its id (linked to its trace) in one column; the actor with its kind
    assert '<span class="audit-quiet">refund</span> <a href="/admin/trace/?q=rf_1"' in html
    assert '<span title="user 7">alice</span> <span class="audit-quiet">user</span>' in html
    # no navigation sidebar: the columns need the width
    assert 'id="nav-sidebar"' not in html
