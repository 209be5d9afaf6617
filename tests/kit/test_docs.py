"""The docs a newcomer reads first stay true to the tree: every error code is listed, every doc it links exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Where problem codes are declared: a class attribute (``code = "x"``, ``default_code = "x"``, ``code = oauth_error =
# "x"``) or a problem raised or built with ``code="x"``. Field-level codes (a serializer's or a form's
# ValidationError) live inside ``errors`` and are not problem codes.
CLASS_CODE = re.compile(r'^\s+(?:default_)?code = (?:\w+ = )?"([a-z_]+)"', re.M)
CALL_CODE = re.compile(r'(?<![\w.])code="([a-z_]+)"')
CONSTANT_CODE = re.compile(r'^(?:HEALTH_URL_[A-Z_]+|[A-Z_]+_CODE) = "([a-z_]+)"', re.M)
# gunicorn's refusals, as the kit's worker class maps them: (exception, status, code, title)
WORKER_CODE = re.compile(r'^\s+\(http_errors\.\w+, \d{3}, "([a-z_]+)"', re.M)
FIELD_ERROR = re.compile(r"(?:ValidationError|ErrorDetail)\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)", re.S)
APPS = ["services/kit", "services/ledger", "services/payments", "portal"]


def _declared_codes() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for app in APPS:
        for path in sorted((REPO / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            text = path.read_text()
            codes = set(CLASS_CODE.findall(text)) | set(CONSTANT_CODE.findall(text)) | set(WORKER_CODE.findall(text))
            codes |= set(CALL_CODE.findall(FIELD_ERROR.sub("", text)))
            for code in codes:
                found.setdefault(code, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_problem_code_is_in_the_error_catalogue() -> None:
    declared = _declared_codes()
    documented = set(re.findall(r"`([a-z_]+)`", (REPO / "docs" / "errors.md").read_text()))
    missing = {code: sorted(where) for code, where in declared.items() if code not in documented}
    assert not missing, f"problem codes missing from docs/errors.md: {missing}"
    # The scan itself finds codes of every kind of declaration (so an empty scan cannot pass).
    for code in (
        "account_code_taken",
        "invalid_client",
        "health_url_blocked",
        "json_too_deep",
        "token_revoked",
        "uri_too_long",
        "login_locked_out",
    ):
        assert code in declared, code


def test_docs_links_to_files_exist() -> None:
    """A path in backquotes that names a doc or a top-level package's module exists."""
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    pattern = re.compile(r"`((?:docs|portal|services|workers|devtools|bench|tests)/[\w./-]+\.(?:md|py))`")
    broken = []
    for doc in docs:
        for target in pattern.findall(doc.read_text()):
            if not (REPO / target).exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert not broken, "paths named in the docs that do not exist:\n" + "\n".join(broken)
