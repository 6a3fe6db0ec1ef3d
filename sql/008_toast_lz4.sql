-- 008: large bodies compressed with lz4 instead of pglz.
--
-- A body of more than about 2 kB is stored compressed and out of line
-- (TOAST), twice: as raw_body (text) and as payload (jsonb). PostgreSQL's
-- default method, pglz, was the largest part of the database's cost per byte
-- in bench/curves.py body (about 41 ms of PostgreSQL CPU for a 1 MB event).
-- lz4 compresses several times faster at a similar ratio for JSON. Bodies
-- under the threshold (i-payout's usual ones) are not compressed either way.
--
-- Only new rows use it; existing rows stay readable as they are (each value
-- records its own method). A catalog change, no rewrite: the brief ACCESS
-- EXCLUSIVE lock waits for the writers' short transactions. A server built
-- without lz4 (SQLSTATE 0A000) keeps pglz, with a notice.
-- A new file (migrate records versions, not contents). Safe to run again.

DO $$
BEGIN
  ALTER TABLE ipayout.events
    ALTER COLUMN raw_body SET COMPRESSION lz4,
    ALTER COLUMN payload SET COMPRESSION lz4,
    ALTER COLUMN headers SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
  RAISE NOTICE 'this PostgreSQL has no lz4: large bodies stay compressed with pglz';
END $$;
