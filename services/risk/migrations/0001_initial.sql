-- The risk service's tables: rules as versioned data, assessments, and the audit outbox.

CREATE TABLE risk_rules_version (
    id text PRIMARY KEY,
    version integer NOT NULL UNIQUE,
    rules jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by jsonb NOT NULL
);

-- One row per assessed payment (idempotent on payment_id). The source's history (velocity, payees, outliers)
-- is read from here: payments denied are kept but never count as history (they move no money).
CREATE TABLE risk_assessment (
    id text PRIMARY KEY,
    payment_id text NOT NULL UNIQUE,
    amount bigint NOT NULL,
    currency text NOT NULL,
    source_account text NOT NULL,
    destination_account text NOT NULL,
    client_id text NOT NULL DEFAULT '',
    payment_created_at timestamptz NOT NULL,
    score integer NOT NULL,
    decision text NOT NULL CHECK (decision IN ('allow', 'review', 'deny')),
    reasons jsonb NOT NULL,
    rules_version integer NOT NULL,
    assessed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX risk_assessment_source_time ON risk_assessment (source_account, payment_created_at)
    INCLUDE (amount) WHERE decision <> 'deny';
CREATE INDEX risk_assessment_payee ON risk_assessment (source_account, destination_account) WHERE decision <> 'deny';
CREATE INDEX risk_assessment_decision ON risk_assessment (decision, id);

-- The audit outbox (docs: contract of issue 21): service_seq is gapless and in commit order, because every
-- writer bumps the singleton's last_seq first (a row lock held to commit).
CREATE TABLE risk_outbox (
    id text PRIMARY KEY,
    service_seq bigint NOT NULL UNIQUE,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE risk_outbox_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq bigint NOT NULL DEFAULT 0,
    published_seq bigint NOT NULL DEFAULT 0
);
INSERT INTO risk_outbox_state (singleton, last_seq, published_seq) VALUES (true, 0, 0);

-- The default rules, version 1: ordinary demo and benchmark traffic (amounts up to 100 EUR, a few payments a
-- second per account, payees new and old) is `allow`; operators tighten them with PUT /api/v1/rules.
INSERT INTO risk_rules_version (id, version, rules, created_by) VALUES (
    'rlv_' || lpad('', 26, '0'),
    1,
    '{"thresholds": {"review": 50, "deny": 80},
      "velocity": [
        {"name": "burst", "window_seconds": 60, "max_count": 1000, "max_amount": null, "weight": 40},
        {"name": "daily", "window_seconds": 86400, "max_count": null, "max_amount": 100000000000, "weight": 40}
      ],
      "new_payee": {"enabled": true, "weight": 10},
      "amount_outlier": {"enabled": true, "percentile": 99, "lookback_days": 90, "min_history": 20, "weight": 30},
      "amount_high": {"EUR": {"amount": 10000000, "weight": 60}}}'::jsonb,
    '{"type": "system", "id": "risk", "display": "risk (migration 0001)"}'::jsonb
);
