-- 007: an index for the workers' endpoint change check.
--
-- Every worker runs, every endpoint_refresh_ms (1 s by default), a check of
-- count(*) and max(updated_at) of ipayout.endpoints (and a digest of the rows
-- stamped in the last 10 minutes: handler/endpoint_loader.cpp). Without an index that is a scan of the whole table: with 100,000 endpoints
-- 69 ms per check (EXPLAIN ANALYZE, bench/curves.py endpoints measured about
-- 24 ms of PostgreSQL CPU per second per idle worker). With this index both
-- aggregates read only the index (an index-only scan, the table being all
-- visible after autovacuum): 7 ms. The check stays O(endpoints); making it
-- O(changes) needs the worker to ask for rows changed since its last load,
-- which is a change in handler/.
--
-- A new file (migrate records versions, not contents). Safe to run again.

CREATE INDEX IF NOT EXISTS endpoints_updated_at ON ipayout.endpoints (updated_at);
