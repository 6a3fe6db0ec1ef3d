-- 005: rotation with an overlap, and i-payout's other registration options.
--
-- Changing an endpoint's key or URL here and at i-payout cannot happen at the
-- same instant; in between, deliveries would fail. So the previous key keeps
-- verifying, and the previous URL token keeps delivering (verified against the
-- notification URL it was registered with: that is what i-payout signs), each
-- until its *_until time. After it, the key no longer verifies and the old URL
-- answers 404 like any unknown token. `endpoint set-key` / `rotate-token`
-- with --keep-previous set these; 0 revokes at once (a leaked key).
--
-- A required header (merchantWebHookAdditionalHeaderDetails: a header i-payout
-- adds to every delivery): when set, a delivery without it, or with another
-- value, gets 401. The value is a secret like the key.
--
-- A new file, not an edit of 001: `migrate` records versions. Safe to run again.

ALTER TABLE ipayout.endpoints
  ADD COLUMN IF NOT EXISTS previous_key text,
  ADD COLUMN IF NOT EXISTS previous_key_until timestamptz,
  ADD COLUMN IF NOT EXISTS previous_token_hash bytea UNIQUE
    CHECK (length(previous_token_hash) = 32),
  ADD COLUMN IF NOT EXISTS previous_notification_url text,
  ADD COLUMN IF NOT EXISTS previous_token_until timestamptz,
  -- Lower case, as HTTP header names compare; only token characters.
  ADD COLUMN IF NOT EXISTS required_header_name text
    CHECK (required_header_name ~ '^[a-z0-9!#$%&''*+.^_`|~-]{1,64}$'),
  ADD COLUMN IF NOT EXISTS required_header_value text;

DO $$
BEGIN
  -- Each pair is set and cleared together.
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'endpoints_previous_key_pair') THEN
    ALTER TABLE ipayout.endpoints ADD CONSTRAINT endpoints_previous_key_pair
      CHECK ((previous_key IS NULL) = (previous_key_until IS NULL));
    ALTER TABLE ipayout.endpoints ADD CONSTRAINT endpoints_previous_token_triple
      CHECK ((previous_token_hash IS NULL) = (previous_token_until IS NULL)
             AND (previous_token_hash IS NULL) = (previous_notification_url IS NULL));
    ALTER TABLE ipayout.endpoints ADD CONSTRAINT endpoints_required_header_pair
      CHECK ((required_header_name IS NULL) = (required_header_value IS NULL));
  END IF;
END $$;

-- The stored verdict names the key that verified: *_previous_key when it was
-- the previous one, during its grace period. NOT VALID: rows already stored
-- hold the old values, which stay allowed; nothing is scanned.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'events_signature_verdict') THEN
    ALTER TABLE ipayout.events DROP CONSTRAINT IF EXISTS events_signature_check;
    ALTER TABLE ipayout.events ADD CONSTRAINT events_signature_verdict
      CHECK (signature IN ('valid', 'valid_previous_key', 'valid_unparsed_timestamp',
                           'valid_unparsed_timestamp_previous_key', 'expired', 'invalid',
                           'missing', 'not_checked')) NOT VALID;
  END IF;
END $$;

GRANT SELECT (previous_key, previous_key_until, previous_token_hash, previous_notification_url,
              previous_token_until, required_header_name, required_header_value)
  ON ipayout.endpoints TO ipayout_writer;
