-- 003: ack and seek share their "no consumer" and "no event" errors and the
-- write of a consumer's position (helpers below), instead of three copies.
-- Behaviour, messages and SQLSTATEs are those of 002.
--
-- A new file, not an edit of 002: `ipayout-webhookd migrate` records which
-- versions a database has, not their contents, so a database that already has
-- 002 would never see an edited 002. CREATE OR REPLACE keeps each function's
-- grants. Safe to run again.

-- The error ack and seek give for a consumer name nobody subscribed: one
-- message and SQLSTATE 42704 (undefined_object), which merchant code matches
-- on. It only raises: each caller finds out in its own way that the consumer
-- is missing (an UPDATE that found no row), never by locking the row of one
-- that exists: a repeated ack must not wait behind another process's poll.
-- (poll, which does lock, says in its message how to create a consumer.)
-- Internal: not SECURITY DEFINER, not granted to anyone.
CREATE OR REPLACE FUNCTION ipayout.raise_no_consumer(p_consumer text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RAISE EXCEPTION 'no consumer named "%"', p_consumer USING ERRCODE = 'undefined_object';
END $$;

-- The feed position of event p_event_id: its txid. The one "no event" error
-- (SQLSTATE P0002, no_data_found; ipayout-events tail matches on it) for ack
-- and seek. Internal, like raise_no_consumer.
CREATE OR REPLACE FUNCTION ipayout.event_txid(p_event_id bigint) RETURNS xid8
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_txid xid8;
BEGIN
  SELECT e.txid INTO v_txid FROM ipayout.events e WHERE e.id = p_event_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no event with id %', p_event_id USING ERRCODE = 'no_data_found';
  END IF;
  RETURN v_txid;
END $$;

-- Puts a consumer at (p_txid, p_id): the next poll returns what comes after it
-- in feed order. The common end of both seek overloads. Internal, like
-- raise_no_consumer: it runs with the privileges of its caller (seek runs as
-- the owner), so a reader calling it directly cannot move a consumer.
CREATE OR REPLACE FUNCTION ipayout.set_consumer_position(
  p_consumer text, p_txid xid8, p_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  UPDATE ipayout.consumers SET position_txid = p_txid, position_id = p_id
  WHERE name = p_consumer;
  IF NOT FOUND THEN
    PERFORM ipayout.raise_no_consumer(p_consumer);
  END IF;
END $$;

-- Move the consumer past event p_event_id and everything before it in feed
-- order. Acking an event at or before the position changes nothing, so a
-- repeated ack is harmless. Returns the event id the position now points at.
CREATE OR REPLACE FUNCTION ipayout.ack(p_consumer text, p_event_id bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  v_txid xid8 := ipayout.event_txid(p_event_id);
BEGIN
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
    PERFORM ipayout.raise_no_consumer(p_consumer);
  END IF;
  RETURN p_event_id;
END $$;


-- Rewind or skip ahead: the next poll starts with event p_event_id (and then
-- everything after it in feed order), or with the first event received at or
-- after p_time. Replays events that were already acked.
CREATE OR REPLACE FUNCTION ipayout.seek(p_consumer text, p_event_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM ipayout.set_consumer_position(p_consumer, ipayout.event_txid(p_event_id),
                                        p_event_id - 1);
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
  PERFORM ipayout.set_consumer_position(p_consumer, v_txid, v_id);
END $$;

REVOKE ALL ON FUNCTION ipayout.raise_no_consumer(text), ipayout.event_txid(bigint),
              ipayout.set_consumer_position(text, xid8, bigint)
  FROM PUBLIC;
