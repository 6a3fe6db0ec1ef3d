-- 001: endpoints, events, the ingest function and NOTIFY.
-- Applied by `ipayout-webhookd migrate`, inside one transaction, as a role that
-- may create roles and schemas. Every statement is safe to run again.

DO $$
BEGIN
  IF current_setting('server_encoding') <> 'UTF8' THEN
    RAISE EXCEPTION 'ipayout-webhook needs a UTF8 database (raw bodies are kept byte for byte as text), this one is %',
      current_setting('server_encoding');
  END IF;
END $$;

-- Group roles; grant them to login roles (see README). Nobody needs a superuser.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ipayout_writer') THEN
    CREATE ROLE ipayout_writer NOLOGIN;  -- the worker pool: ingest events, read endpoints
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ipayout_reader') THEN
    CREATE ROLE ipayout_reader NOLOGIN;  -- merchant systems: read events
  END IF;
END $$;

CREATE SCHEMA IF NOT EXISTS ipayout;
REVOKE ALL ON SCHEMA ipayout FROM PUBLIC;
GRANT USAGE ON SCHEMA ipayout TO ipayout_writer, ipayout_reader;

CREATE TABLE IF NOT EXISTS ipayout.endpoints (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name             text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
  -- SHA-256 of the URL token. The token itself is shown once and never stored.
  token_hash       bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
  -- i-payout's key for this endpoint (HMAC key of x-signature). A secret.
  ipayout_key      text NOT NULL DEFAULT '',
  -- Exactly the URL registered with i-payout: it is part of what is signed.
  notification_url text NOT NULL,
  signature_policy text NOT NULL DEFAULT 'required'
                   CHECK (signature_policy IN ('required', 'record', 'off')),
  success_status   integer NOT NULL DEFAULT 200 CHECK (success_status BETWEEN 200 AND 299),
  success_body     text,  -- NULL: {"status":"accepted|duplicate","id":N}; else a template
  enabled          boolean NOT NULL DEFAULT true,
  created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
  updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
  CHECK (signature_policy = 'off' OR ipayout_key <> '')
);

CREATE TABLE IF NOT EXISTS ipayout.events (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  endpoint_id bigint NOT NULL REFERENCES ipayout.endpoints (id),
  event       text NOT NULL,
  dedup_key   text NOT NULL,
  -- The body as jsonb; NULL only when the body is valid JSON that jsonb cannot
  -- hold (a \u0000 escape). raw_body always has the exact bytes received.
  payload     jsonb,
  raw_body    text NOT NULL,
  headers     jsonb NOT NULL DEFAULT '{}',
  signature   text NOT NULL CHECK (signature IN ('valid', 'valid_unparsed_timestamp', 'expired',
                                                 'invalid', 'missing', 'not_checked')),
  remote_addr inet,
  received_at timestamptz NOT NULL DEFAULT now(),
  -- The inserting transaction: readers use it to never skip an event whose
  -- transaction commits after a later id was read (see the consumer functions).
  txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
  CONSTRAINT events_dedup UNIQUE (endpoint_id, dedup_key)
);
CREATE INDEX IF NOT EXISTS events_received_at ON ipayout.events (received_at);

-- Keeps updated_at true, so workers notice any endpoint change cheaply.
CREATE OR REPLACE FUNCTION ipayout.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := clock_timestamp();
  RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER endpoints_touch BEFORE UPDATE ON ipayout.endpoints
  FOR EACH ROW EXECUTE FUNCTION ipayout.touch_updated_at();

-- One notification per inserted event, sent by PostgreSQL at COMMIT: never for a
-- rolled-back insert, never for a duplicate (ON CONFLICT DO NOTHING inserts no
-- row, so the transition table does not contain it). Payload stays far below
-- NOTIFY's 8000 bytes: event names are at most 255 bytes, endpoint names 63.
CREATE OR REPLACE FUNCTION ipayout.notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- Compact JSON, exactly {"id":N,"event":"...","endpoint":"..."}; to_json()
  -- quotes and escapes the strings.
  PERFORM pg_notify('ipayout_events',
                    format('{"id":%s,"event":%s,"endpoint":%s}',
                           n.id, to_json(left(n.event, 255)), to_json(ep.name)))
  FROM (SELECT * FROM inserted ORDER BY id) n
  JOIN ipayout.endpoints ep ON ep.id = n.endpoint_id;
  RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER events_notify AFTER INSERT ON ipayout.events
  REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION ipayout.notify_events();

-- The worker's only way to write: one call per group commit. Input arrays are
-- parallel (one element per event). Returns, per input position (1-based), the
-- event id and whether this transaction inserted it (false = duplicate).
CREATE OR REPLACE FUNCTION ipayout.ingest(
  p_endpoint_id bigint[], p_event text[], p_dedup_key text[], p_raw_body text[],
  p_is_jsonb boolean[], p_headers text[], p_signature text[], p_remote_addr text[])
RETURNS TABLE (ord integer, id bigint, accepted boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- The statements below have the same shape on every call: plan them once.
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
  v_ords integer[];
  v_ids  bigint[];
BEGIN
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

REVOKE ALL ON FUNCTION ipayout.ingest(bigint[], text[], text[], text[], boolean[], text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ipayout.ingest(bigint[], text[], text[], text[], boolean[], text[], text[], text[]) TO ipayout_writer;

-- The worker reads endpoint configuration (including the key it verifies with).
GRANT SELECT (id, name, token_hash, ipayout_key, notification_url, signature_policy,
              success_status, success_body, enabled, updated_at)
  ON ipayout.endpoints TO ipayout_writer;
-- Readers see events and endpoint names, never keys, token hashes or URLs (the
-- notification URL contains the token).
GRANT SELECT ON ipayout.events TO ipayout_reader;
GRANT SELECT (id, name, enabled, created_at) ON ipayout.endpoints TO ipayout_reader;
