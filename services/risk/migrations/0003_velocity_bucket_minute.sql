-- Retention (src/retention.ts) deletes the minute buckets older than the velocity horizon, oldest first, in bounded
-- batches: this index finds them without scanning the table (the primary key leads with the source account).
CREATE INDEX risk_velocity_bucket_minute ON risk_velocity_bucket (minute);
