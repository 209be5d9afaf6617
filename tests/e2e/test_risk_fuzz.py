"""Property-based fuzzing of the TypeScript risk service's OpenAPI document (Schemathesis), against the live Node
process: the same seeded run, checks and bounds as every Python service's (``tests/e2e/test_fuzz.py``) — never a
5xx, and the status, content type and body as its schema documents them.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from portal.identity import services as identity
from tests.e2e.risk_stack import DECIDING_RULES, caller_token, risk_rules, risk_start
from tests.e2e.test_fuzz import fuzz
from tests.harness import AtriumProcess, ProcessHarness

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.mark.timeout(600)
def test_the_risk_service_answers_a_seeded_fuzz_without_a_5xx_and_as_its_schema_says(
    harness: ProcessHarness, live_portal: AtriumProcess, get_token: Callable[..., str]
):
    risk = risk_start(harness, live_portal)
    risk_rules(risk, caller_token(live_portal, ["risk:write"]), DECIDING_RULES)
    client, secret = identity.client_create(
        name="risk-fuzzer", audiences=["risk"], scopes=["risk:read", "risk:assess", "risk:write"]
    )
    token = get_token(client.id, secret, "risk")
    # an assessment for the id-taking paths to find
    assessed = httpx.post(
        f"{risk.url}/api/v1/assessments",
        json={
            "payment_id": "pay_fuzz",
            "amount": 100,
            "currency": "EUR",
            "source_account": "acc_fuzz_a",
            "destination_account": "acc_fuzz_b",
            "client_id": client.id,
            "created_at": "2026-12-05T10:00:00Z",
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert assessed.status_code == 200, assessed.text

    result = fuzz(
        "risk", risk.url, token, harness.log_dir, {r"^/api/v1/assessments/\{id\}": {"path.id": assessed.json()["id"]}}
    )

    report = result["report"]
    assert report, f"Schemathesis wrote no report:\n{result['output']}"
    (harness.log_dir / "fuzz-risk-figures.json").write_text(json.dumps(report, indent=2, default=str))
    assert result["returncode"] == 0, result["output"]
