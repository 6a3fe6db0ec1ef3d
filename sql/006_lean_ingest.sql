-- 006: a cheaper ipayout.ingest(), same contract as 001's: same signature and
-- result rows, the same de-duplication, one NOTIFY ipayout_events per inserted
-- event with the same payload, sent at COMMIT in id order, txid as before.
--
-- Where 001's one-event commit spent its backend CPU (bench/ingest_cost.py,
-- instructions per transaction under callgrind; docs/scaling.md has the
-- table): a plain one-row INSERT and COMMIT about 620k; ingest() without the
-- statement trigger about 860k (the CTE over unnest(), the join back to the
-- input, RETURN QUERY); the statement trigger with its transition table,
-- plpgsql call, sort and join another 130k. The SET clauses cost about 7k.
-- So:
--   * NOTIFY comes from ingest() itself, from the rows it inserted, and the
--     trigger no longer runs for ingest()'s inserts. Other inserts (the owner's
--     own, by hand) still notify: a row trigger, skipped while ingest() runs
--     (its SET clause sets ipayout.in_ingest). A row trigger with a WHEN clause
--     that is false queues nothing: no transition table is collected.
--   * One event (the pool's case at low load, and every batch of one): one
--     INSERT ... VALUES with RETURNING, no unnest, no join, RETURN NEXT.
--   * Several events: 001's statement, then one pg_notify statement.
--
-- A new file, not an edit of 001 (migrate records versions, not contents).
-- CREATE OR REPLACE keeps the function's grants. Safe to run again.

CREATE OR REPLACE FUNCTION ipayout.ingest(
  p_endpoint_id bigint[], p_event text[], p_dedup_key text[], p_raw_body text[],
  p_is_jsonb boolean[], p_headers text[], p_signature text[], p_remote_addr text[])
RETURNS TABLE (ord integer, id bigint, accepted boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- The statements below have the same shape on every call: plan them once.
SET plan_cache_mode = force_generic_plan
-- Read by the events_notify trigger: ingest() notifies for its rows itself.
SET ipayout.in_ingest = 'on' AS $$
#variable_conflict use_column
DECLARE
  v_ords integer[];
  v_ids  bigint[];
  v_id   bigint;
BEGIN
  IF cardinality(p_endpoint_id) = 1 THEN
    INSERT INTO ipayout.events AS e
      (endpoint_id, event, dedup_key, payload, raw_body, headers, signature, remote_addr)
    VALUES (p_endpoint_id[1], p_event[1], p_dedup_key[1],
            CASE WHEN p_is_jsonb[1] THEN p_raw_body[1]::jsonb END,
            p_raw_body[1], p_headers[1]::jsonb, p_signature[1], p_remote_addr[1]::inet)
    ON CONFLICT (endpoint_id, dedup_key) DO NOTHING
    RETURNING e.id INTO v_id;
    IF v_id IS NOT NULL THEN
      PERFORM pg_notify('ipayout_events',
                        format('{"id":%s,"event":%s,"endpoint":%s}',
                               v_id, to_json(left(p_event[1], 255)), to_json(ep.name)))
      FROM ipayout.endpoints ep WHERE ep.id = p_endpoint_id[1];
      ord := 1;
      id := v_id;
      accepted := true;
      RETURN NEXT;
      RETURN;
    END IF;
    -- A duplicate: as below, a new statement with a new snapshot also sees a
    -- copy that a concurrent writer committed while ON CONFLICT waited for it.
    RETURN QUERY
    SELECT 1, e.id, false FROM ipayout.events e
    WHERE e.endpoint_id = p_endpoint_id[1] AND e.dedup_key = p_dedup_key[1];
    RETURN;
  END IF;

  -- The rows this call inserted, by input position.
  WITH input AS (
    SELECT t.*
    FROM unnest(p_endpoint_id, p_event, p_dedup_key, p_raw_body, p_is_jsonb, p_headers,
                p_signature, p_remote_addr) WITH ORDINALITY
         AS t(endpoint_id, event, dedup_key, raw_body, is_jsonb, headers, signature, remote_addr, n)
  ), inserted AS (
    INSERT INTO ipayout.events
      (endpoint_id, event, dedup_key, payload, raw_body, headers, signature, remote_addr)
    SELECT i.endpoint_id, i.event, i.dedup_key,
           CASE WHEN i.is_jsonb THEN i.raw_body::jsonb END,
           i.raw_body, i.headers::jsonb, i.signature, i.remote_addr::inet
    FROM input i
    ORDER BY i.n
    ON CONFLICT (endpoint_id, dedup_key) DO NOTHING
    RETURNING events.id, events.endpoint_id, events.dedup_key
  )
  SELECT array_agg(i.n::integer), array_agg(r.id) INTO v_ords, v_ids
  FROM inserted r JOIN input i ON i.endpoint_id = r.endpoint_id AND i.dedup_key = r.dedup_key;

  -- One notification per inserted row, in id order (volatile functions in the
  -- select list run after the sort).
  PERFORM pg_notify('ipayout_events',
                    format('{"id":%s,"event":%s,"endpoint":%s}',
                           o.id, to_json(left(p_event[o.ord], 255)), to_json(ep.name)))
  FROM unnest(v_ords, v_ids) AS o(ord, id)
  JOIN ipayout.endpoints ep ON ep.id = p_endpoint_id[o.ord]
  ORDER BY o.id;

  RETURN QUERY SELECT o.ord, o.id, true FROM unnest(v_ords, v_ids) AS o(ord, id);

  IF coalesce(cardinality(v_ords), 0) < cardinality(p_endpoint_id) THEN
    -- Duplicates. A second statement takes a new snapshot (READ COMMITTED), so
    -- it also sees a copy that a concurrent writer committed while ON CONFLICT
    -- waited for it.
    RETURN QUERY
    SELECT t.n::integer, e.id, false
    FROM unnest(p_endpoint_id, p_dedup_key) WITH ORDINALITY AS t(endpoint_id, dedup_key, n)
    JOIN ipayout.events e ON e.endpoint_id = t.endpoint_id AND e.dedup_key = t.dedup_key
    WHERE t.n <> ALL (coalesce(v_ords, '{}'));
  END IF;
END $$;

-- Inserts that do not come through ingest(): one notification per row, the
-- payload 001's trigger sent. Row triggers fire in insertion order, which is
-- id order for one statement.
CREATE OR REPLACE FUNCTION ipayout.notify_event() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pg_notify('ipayout_events',
                    format('{"id":%s,"event":%s,"endpoint":%s}',
                           NEW.id, to_json(left(NEW.event, 255)), to_json(ep.name)))
  FROM ipayout.endpoints ep WHERE ep.id = NEW.endpoint_id;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION ipayout.notify_event() FROM PUBLIC;

DROP TRIGGER IF EXISTS events_notify ON ipayout.events;
CREATE TRIGGER events_notify AFTER INSERT ON ipayout.events
  FOR EACH ROW
  WHEN (current_setting('ipayout.in_ingest', true) IS DISTINCT FROM 'on')
  EXECUTE FUNCTION ipayout.notify_event();
-- 001's statement-trigger function is no longer used by any trigger.
DROP FUNCTION IF EXISTS ipayout.notify_events();
