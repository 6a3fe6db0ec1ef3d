-- Exactly-once effects inside PostgreSQL: poll, apply, ack in ONE transaction.
-- Either all three commit or none does, so each event changes the table below
-- exactly once, however often (or however concurrently) this script runs:
--   psql -v ON_ERROR_STOP=1 -f examples/consumer.sql "$DATABASE_URL"
-- Run it as a role in ipayout_reader that may create the table (or create the
-- table once beforehand); repeat it from cron or a loop.

-- The merchant's own table: one row per payment event applied. No UNIQUE
-- constraint on purpose: exactly-once comes from the transaction, not dedup.
CREATE TABLE IF NOT EXISTS merchant_payment_log (
  event_id    bigint NOT NULL,
  event       text NOT NULL,
  payment_id  text,
  status      text,
  received_at timestamptz NOT NULL
);

-- Once: a consumer that starts at the oldest event and sees payments only.
SELECT ipayout.subscribe('merchant-payments', 'beginning', 'PAYMENT.%');

BEGIN;
-- The next events. poll locks the consumer until COMMIT: a second copy of this
-- script waits here, then sees the position this one acked.
CREATE TEMP TABLE batch ON COMMIT DROP AS
  SELECT * FROM ipayout.poll('merchant-payments', 500);

INSERT INTO merchant_payment_log (event_id, event, payment_id, status, received_at)
SELECT id, event, payload #>> '{data,paymentId}', payload #>> '{data,status}', received_at
FROM batch;

-- Ack the last event in feed order, (txid, id): not necessarily the highest id.
SELECT ipayout.ack('merchant-payments', id) AS acked
FROM batch ORDER BY txid DESC, id DESC LIMIT 1;
COMMIT;
