-- Velocity per source account by the minute: what each source paid (payments not denied) in each minute of
-- creation time, kept by the assessment that adds the payments (under the source's lock). A window's count and
-- amount is the sum of the whole minutes inside it plus an exact scan of the partial minute at its start, so a
-- 24-hour window reads at most 1440 rows per source, not every payment.
CREATE TABLE risk_velocity_bucket (
    source_account text NOT NULL,
    minute timestamptz NOT NULL,
    count integer NOT NULL,
    amount numeric NOT NULL,
    PRIMARY KEY (source_account, minute)
);

INSERT INTO risk_velocity_bucket (source_account, minute, count, amount)
SELECT source_account, date_trunc('minute', payment_created_at), count(*), sum(amount)
FROM risk_assessment WHERE decision <> 'deny'
GROUP BY 1, 2;
