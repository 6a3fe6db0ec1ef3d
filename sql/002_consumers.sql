-- 002: reading events. Named durable consumers, a gap-free feed, ack, replay,
-- lag, retention. Applied by `ipayout-webhookd migrate`; safe to run again.
--
-- The feed order is (txid, id), not id. Ids come from a sequence when a row is
-- inserted, but transactions commit in another order: an event with a lower id
-- can become visible after a higher one was read. So a reader only reads rows
-- whose transaction is older than every transaction still running
-- (txid < pg_snapshot_xmin(pg_current_snapshot())); each of those is committed
-- and visible, or never will be. Any row that becomes readable later has a txid
-- >= that horizon, so it sorts after everything already read: a position
-- (txid, id) never skips an event.

CREATE INDEX IF NOT EXISTS events_feed ON ipayout.events (txid, id);

CREATE TABLE IF NOT EXISTS ipayout.consumers (
  name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$'),
  -- Everything at or before (position_txid, position_id) in feed order is acked.
  position_txid xid8 NOT NULL,
  position_id   bigint NOT NULL,
  event_pattern text NOT NULL DEFAULT '%',  -- LIKE pattern on events.event
  created_at    timestamptz NOT NULL DEFAULT now(),
  acked_at      timestamptz
);

-- The readable horizon: rows with txid below it are final.
CREATE OR REPLACE FUNCTION ipayout.feed_horizon() RETURNS xid8
LANGUAGE sql STABLE AS $$ SELECT pg_snapshot_xmin(pg_current_snapshot()) $$;

-- Events after a position, in feed order, below the horizon. The building block
-- of poll and of stateless readers (ipayout-events tail without --consumer).
CREATE OR REPLACE FUNCTION ipayout.read_after(
  p_txid xid8, p_id bigint, p_max integer DEFAULT 100, p_pattern text DEFAULT '%')
RETURNS SETOF ipayout.events
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT e.*
  FROM ipayout.events e
  WHERE (e.txid, e.id) > (p_txid, p_id)
    AND e.txid < pg_snapshot_xmin(pg_current_snapshot())
    AND e.event LIKE p_pattern
  ORDER BY e.txid, e.id
  LIMIT greatest(p_max, 0)
$$;

-- Create a consumer. p_from: 'end' (only events not yet readable), 'beginning',
-- or a timestamp as text (events received at or after it). Existing consumers
-- are left as they are (subscribe is idempotent); returns true if created.
CREATE OR REPLACE FUNCTION ipayout.subscribe(
  p_consumer text, p_from text DEFAULT 'end', p_event_pattern text DEFAULT '%')
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_txid xid8;
  v_id   bigint;
BEGIN
  IF p_from = 'end' THEN
    -- Rows of transactions still running have txid >= the horizon: included.
    v_txid := pg_snapshot_xmin(pg_current_snapshot());
    v_id := 0;
  ELSIF p_from = 'beginning' THEN
    v_txid := '0'::xid8;
    v_id := 0;
  ELSE
    SELECT e.txid, e.id - 1 INTO v_txid, v_id
    FROM ipayout.events e WHERE e.received_at >= p_from::timestamptz
    ORDER BY e.txid, e.id LIMIT 1;
    IF NOT FOUND THEN
      v_txid := pg_snapshot_xmin(pg_current_snapshot());
      v_id := 0;
    END IF;
  END IF;
  INSERT INTO ipayout.consumers (name, position_txid, position_id, event_pattern)
  VALUES (p_consumer, v_txid, v_id, coalesce(p_event_pattern, '%'))
  ON CONFLICT (name) DO NOTHING;
  RETURN FOUND;
END $$;

CREATE OR REPLACE FUNCTION ipayout.unsubscribe(p_consumer text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  WITH d AS (DELETE FROM ipayout.consumers WHERE name = p_consumer RETURNING 1)
  SELECT count(*) > 0 FROM d
$$;

-- The next events for a consumer, in feed order; does not move its position.
-- Locks the consumer's row until the end of the caller's transaction, so
-- poll -> work -> ack in one transaction is exactly-once even with two
-- processes using the same consumer name.
CREATE OR REPLACE FUNCTION ipayout.poll(p_consumer text, p_max integer DEFAULT 100)
RETURNS SETOF ipayout.events
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  c ipayout.consumers;
BEGIN
  SELECT * INTO c FROM ipayout.consumers WHERE name = p_consumer FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no consumer named "%"; create it with ipayout.subscribe()', p_consumer
      USING ERRCODE = 'undefined_object';
  END IF;
  RETURN QUERY SELECT * FROM ipayout.read_after(c.position_txid, c.position_id, p_max,
                                                  c.event_pattern);
END $$;

-- Move the consumer past event p_event_id and everything before it in feed
-- order. Acking an event at or before the position changes nothing, so a
-- repeated ack is harmless. Returns the event id the position now points at.
CREATE OR REPLACE FUNCTION ipayout.ack(p_consumer text, p_event_id bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_txid xid8;
BEGIN
  SELECT e.txid INTO v_txid FROM ipayout.events e WHERE e.id = p_event_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no event with id %', p_event_id USING ERRCODE = 'no_data_found';
  END IF;
  -- An id poll has not returned yet (say, from a notification) may sit above
  -- events of older transactions still running: acking it would skip them.
  IF v_txid >= pg_snapshot_xmin(pg_current_snapshot()) THEN
    RAISE EXCEPTION 'event % is not readable yet: ack only ids that poll returned', p_event_id
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  UPDATE ipayout.consumers
  SET position_txid = v_txid, position_id = p_event_id, acked_at = now()
  WHERE name = p_consumer AND (position_txid, position_id) < (v_txid, p_event_id);
  IF NOT FOUND AND NOT EXISTS (SELECT FROM ipayout.consumers WHERE name = p_consumer) THEN
    RAISE EXCEPTION 'no consumer named "%"', p_consumer USING ERRCODE = 'undefined_object';
  END IF;
  RETURN p_event_id;
END $$;

-- Rewind or skip ahead: the next poll starts with event p_event_id (and then
-- everything after it in feed order), or with the first event received at or
-- after p_time. Replays events that were already acked.
CREATE OR REPLACE FUNCTION ipayout.seek(p_consumer text, p_event_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_txid xid8;
BEGIN
  SELECT e.txid INTO v_txid FROM ipayout.events e WHERE e.id = p_event_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no event with id %', p_event_id USING ERRCODE = 'no_data_found';
  END IF;
  UPDATE ipayout.consumers SET position_txid = v_txid, position_id = p_event_id - 1
  WHERE name = p_consumer;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no consumer named "%"', p_consumer USING ERRCODE = 'undefined_object';
  END IF;
END $$;

CREATE OR REPLACE FUNCTION ipayout.seek(p_consumer text, p_time timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_txid xid8;
  v_id   bigint;
BEGIN
  SELECT e.txid, e.id - 1 INTO v_txid, v_id FROM ipayout.events e
  WHERE e.received_at >= p_time ORDER BY e.txid, e.id LIMIT 1;
  IF NOT FOUND THEN  -- nothing that recent: start at the end
    v_txid := pg_snapshot_xmin(pg_current_snapshot());
    v_id := 0;
  END IF;
  UPDATE ipayout.consumers SET position_txid = v_txid, position_id = v_id
  WHERE name = p_consumer;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no consumer named "%"', p_consumer USING ERRCODE = 'undefined_object';
  END IF;
END $$;

-- Consumers with their position and how far behind they are.
CREATE OR REPLACE FUNCTION ipayout.consumer_status()
RETURNS TABLE (consumer text, event_pattern text, position_id bigint, pending bigint,
               oldest_pending_at timestamptz, lag interval, acked_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT c.name, c.event_pattern, c.position_id, p.n, p.oldest, now() - p.oldest, c.acked_at
  FROM ipayout.consumers c
  CROSS JOIN LATERAL (
    SELECT count(*) AS n, min(e.received_at) AS oldest
    FROM ipayout.events e
    WHERE (e.txid, e.id) > (c.position_txid, c.position_id) AND e.event LIKE c.event_pattern
  ) p
  ORDER BY c.name
$$;

-- Retention: delete up to p_batch events received more than p_older_than ago
-- and return how many. Unless p_force, never an event that some consumer has
-- not acked yet (whatever its pattern: a consumer's pattern may change, its
-- position is what counts). One batch per call, so each call is a short
-- transaction: a purge transaction holds the readable horizon (its own txid)
-- while it runs, and readers would wait behind a long one. Callers loop until
-- the result is below p_batch (`ipayout-events purge` does).
CREATE OR REPLACE FUNCTION ipayout.purge(
  p_older_than interval, p_force boolean DEFAULT false, p_batch integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_min_txid xid8;
  v_min_id   bigint;
  v_n        bigint;
BEGIN
  IF p_batch IS NULL OR p_batch < 1 THEN
    RAISE EXCEPTION 'purge: batch must be at least 1, not %', p_batch
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT c.position_txid, c.position_id INTO v_min_txid, v_min_id
  FROM ipayout.consumers c ORDER BY c.position_txid, c.position_id LIMIT 1;
  DELETE FROM ipayout.events e
  WHERE e.id IN (
    SELECT x.id FROM ipayout.events x
    WHERE x.received_at < now() - p_older_than
      AND (p_force OR v_min_txid IS NULL OR (x.txid, x.id) <= (v_min_txid, v_min_id))
    LIMIT p_batch);
  GET DIAGNOSTICS v_n = ROW_COUNT;
  RETURN v_n;
END $$;

REVOKE ALL ON ipayout.consumers FROM PUBLIC;
GRANT SELECT ON ipayout.consumers TO ipayout_reader;
REVOKE ALL ON FUNCTION ipayout.read_after(xid8, bigint, integer, text),
              ipayout.subscribe(text, text, text), ipayout.unsubscribe(text),
              ipayout.poll(text, integer), ipayout.ack(text, bigint),
              ipayout.seek(text, bigint), ipayout.seek(text, timestamptz),
              ipayout.consumer_status(), ipayout.purge(interval, boolean, integer)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipayout.feed_horizon(), ipayout.read_after(xid8, bigint, integer, text),
              ipayout.subscribe(text, text, text), ipayout.unsubscribe(text),
              ipayout.poll(text, integer), ipayout.ack(text, bigint),
              ipayout.seek(text, bigint), ipayout.seek(text, timestamptz),
              ipayout.consumer_status()
  TO ipayout_reader;
-- purge deletes data: for the owner or a role the merchant grants it to.
