-- 004: consumer lag for monitoring, at a bounded cost per call.
--
-- ipayout.consumer_status() (002) counts every pending event of every consumer:
-- a scan of the whole backlog per consumer (about 3 s for three consumers with
-- 1,000,000 pending events, bench/consumer_lag.py). Fine for a person asking
-- once, not for a scrape every 15 s. consumer_lag() reads at most p_window
-- events of the feed per consumer, through the events_feed index, whatever the
-- backlog: its cost grows with consumers x p_window, never with the table.
--
-- A new file, not an edit of 002: `ipayout-webhookd migrate` records versions,
-- not contents. Safe to run again.

-- The group role of monitoring logins (postgres_exporter): it may call
-- consumer_lag() and nothing else, so it never sees a payload or a key.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ipayout_monitor') THEN
    CREATE ROLE ipayout_monitor NOLOGIN;
  END IF;
END $$;
GRANT USAGE ON SCHEMA ipayout TO ipayout_monitor;

-- Per consumer, over the next p_window events after its position in feed
-- order (all events, whatever the consumer's pattern, so that a pattern that
-- matches nothing cannot turn the read into a scan of the backlog):
--   pending      events in that window that match the consumer's pattern;
--                when window_full, the true number may be higher (a lower bound);
--   oldest_pending_at / oldest_pending_age_seconds
--                the first matching event of the window. If none matches but
--                the window is full, the newest event of the window: the
--                consumer's next event is at most that old (an upper bound).
--                Age 0 when nothing is pending.
-- jit off: the planner's estimate for the nested loop is far above the real
-- cost and JIT compilation alone took longer than the query (360 ms).
CREATE OR REPLACE FUNCTION ipayout.consumer_lag(p_window integer DEFAULT 10000)
RETURNS TABLE (consumer text, pending bigint, window_full boolean,
               oldest_pending_at timestamptz, oldest_pending_age_seconds double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
  SELECT c.name, w.pending, w.scanned >= greatest(p_window, 1), w.oldest,
         coalesce(extract(epoch FROM now() - w.oldest)::double precision, 0)
  FROM ipayout.consumers c
  CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE s.event LIKE c.event_pattern) AS pending,
           count(*) AS scanned,
           coalesce(min(s.received_at) FILTER (WHERE s.event LIKE c.event_pattern),
                    CASE WHEN count(*) >= greatest(p_window, 1) THEN max(s.received_at) END)
             AS oldest
    FROM (SELECT e.event, e.received_at
          FROM ipayout.events e
          WHERE (e.txid, e.id) > (c.position_txid, c.position_id)
          ORDER BY e.txid, e.id
          LIMIT greatest(p_window, 1)) s
  ) w
  ORDER BY c.name
$$;

REVOKE ALL ON FUNCTION ipayout.consumer_lag(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipayout.consumer_lag(integer) TO ipayout_monitor, ipayout_reader;
