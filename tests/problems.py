"""The one assertion for RFC 9457 problem documents (Django test client or httpx responses)."""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """``response`` is a problem document with ``status`` and ``code``, tied to its request id; return its body."""
    assert response.status_code == status, response.content[:1000]
    assert response.headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:atrium:problem:{code}"
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body
