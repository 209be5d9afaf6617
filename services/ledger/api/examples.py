"""Examples in the ledger's API reference: what integrators see in /api/docs (values as real answers have them)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample

ACCOUNT = {
    "id": "acc_01m91tj5evthg5y88hn0fhqfcz",
    "code": "customer:1042:wallet",
    "name": "Customer 1042 wallet",
    "currency": "EUR",
    "normal_balance": "credit",
    "status": "open",
    "overdraft_limit": 0,
    "allow_negative": False,
    "debits_posted": 2500,
    "credits_posted": 10000,
    "debits_pending": 1250,
    "credits_pending": 0,
    "balance": 7500,
    "available": 6250,
    "metadata": {"customer": "1042"},
    "created_at": "2026-12-04T09:30:00.000000Z",
}
POSTINGS = [
    {"account": "acc_01m91tj5evthg5y88hn0fhqfcz", "direction": "debit", "amount": 1250},
    {"account": "acc_01m91tj5ew2c6x0yq7k3p8d4rb", "direction": "credit", "amount": 1250},
]
TRANSACTION = {
    "id": "txn_01m91tj5evgh0f2v6jnfcwavj8",
    "reference": "order-7731",
    "status": "posted",
    "currency": "EUR",
    "postings": POSTINGS,
    "description": "Order 7731",
    "metadata": {"order": "7731"},
    "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh",
    "created_at": "2026-12-04T09:31:00.000000Z",
    "posted_at": "2026-12-04T09:31:00.000000Z",
    "voided_at": None,
    "expires_at": None,
}
TRANSACTION_INPUT = {
    "reference": "order-7731",
    "description": "Order 7731",
    "currency": "EUR",
    "postings": POSTINGS,
    "metadata": {"order": "7731"},
}

account_created = OpenApiExample(
    "A customer's wallet",
    value=ACCOUNT | {"debits_posted": 0, "credits_posted": 0, "debits_pending": 0, "balance": 0, "available": 0},
    response_only=True,
    status_codes=["201"],
)
account_create = OpenApiExample(
    "A customer's wallet in euros",
    value={
        "code": "customer:1042:wallet",
        "name": "Customer 1042 wallet",
        "currency": "EUR",
        "normal_balance": "credit",
        "metadata": {"customer": "1042"},
    },
    request_only=True,
)
account = OpenApiExample("An account", value=ACCOUNT, response_only=True)
account_update = OpenApiExample("Freeze an account", value={"status": "frozen"}, request_only=True)
account_frozen = OpenApiExample("The account, frozen", value=ACCOUNT | {"status": "frozen"}, response_only=True)
balance = OpenApiExample(
    "Balance at the end of November",
    value={
        "account": ACCOUNT["id"],
        "as_of": "2026-12-01T00:00:00Z",
        "debits_posted": 2500,
        "credits_posted": 10000,
        "debits_pending": 0,
        "credits_pending": 0,
        "balance": 7500,
        "available": 7500,
    },
    response_only=True,
)
posting = OpenApiExample(
    "A posting of the account",
    value={
        "id": 81234,
        "transaction": TRANSACTION["id"],
        "reference": "order-7731",
        "status": "posted",
        "direction": "debit",
        "amount": 1250,
        "created_at": "2026-12-04T09:31:00.000000Z",
    },
    response_only=True,
)
transaction_create = OpenApiExample("Move EUR 12.50 between two accounts", value=TRANSACTION_INPUT, request_only=True)
transaction_hold = OpenApiExample(
    "Hold EUR 12.50 (post or void it later)", value=TRANSACTION_INPUT | {"pending": True}, request_only=True
)
transaction_created = OpenApiExample(
    "The transaction (201 when new, 200 when the same reference and content came before)",
    value=TRANSACTION,
    response_only=True,
    status_codes=["201", "200"],
)
transaction = OpenApiExample("A transaction", value=TRANSACTION, response_only=True)
transaction_posted = OpenApiExample("The hold, posted", value=TRANSACTION, response_only=True)
transaction_voided = OpenApiExample(
    "The hold, voided",
    value=TRANSACTION | {"status": "voided", "posted_at": None, "voided_at": "2026-12-04T09:40:00.000000Z"},
    response_only=True,
)
batch = OpenApiExample(
    "Two transactions, each applied on its own",
    value={
        "atomic": False,
        "transactions": [
            TRANSACTION_INPUT | {"request_id": "req_01m91tj5evb16g3wrkrk6xt9rh"},
            TRANSACTION_INPUT | {"reference": "order-7732", "postings": [POSTINGS[0] | {"amount": 99}]},
        ],
    },
    request_only=True,
)
batch_results = OpenApiExample(
    "One created, one refused",
    value={
        "results": [
            {"index": 0, "status": "created", "id": TRANSACTION["id"]},
            {"index": 1, "status": "error", "code": "too_few_postings", "detail": "A transaction needs two postings."},
        ]
    },
    response_only=True,
)
settle = OpenApiExample(
    "Post two holds",
    value={
        "action": "post",
        "transactions": [
            "txn_01m91tj5evgh0f2v6jnfcwavj8",
            {"id": "txn_01m91tj5ew8k1m2n3p4q5r6s7t", "request_id": "req_01m91tj5evb16g3wrkrk6xt9rh"},
        ],
    },
    request_only=True,
)
settle_results = OpenApiExample(
    "One posted, one no longer pending",
    value={
        "results": [
            {"index": 0, "status": "posted", "id": "txn_01m91tj5evgh0f2v6jnfcwavj8"},
            {
                "index": 1,
                "status": "error",
                "id": "txn_01m91tj5ew8k1m2n3p4q5r6s7t",
                "code": "transaction_not_pending",
                "detail": "Transaction txn_01m91tj5ew8k1m2n3p4q5r6s7t is voided, not pending.",
            },
        ]
    },
    response_only=True,
)
