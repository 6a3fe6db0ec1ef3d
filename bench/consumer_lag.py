#!/usr/bin/python3
"""What one scrape of the consumer-lag metrics costs with a large backlog: the
unbounded ipayout.consumer_status() (002) beside the bounded
ipayout.consumer_lag() (004) that monitoring/postgres-exporter/ipayout-queries.yaml
calls, and one real scrape of Debian's prometheus-postgres-exporter with that
file. Not a test: it measures and prints, it does not pass or fail.

    bench/consumer_lag.py [--events 1000000] [--runs 5]

It needs a built tree (cmake --build build) and the packages postgresql-15 and
prometheus-postgres-exporter. It starts its own stack with scripts/stack in
.run/bench-lag (PostgreSQL on 29519, HTTPS on 9519 and the two ports after it;
the exporter on 127.0.0.1:29522) and stops it afterwards (--keep leaves it
running); --state-dir, --pg-port, --https-port and --exporter-port move it.
The events are inserted with SQL straight into ipayout.events (10,000 per
transaction, half PAYMENT.COMPLETED, half TRANSFER.SENT, 400-byte bodies), not
posted: the subject is reading a backlog, not ingesting it. A second run on the
same state directory reuses them. Four consumers: `all` and `payments`
(pattern PAYMENT.%) at the beginning, `rare` (a pattern nothing matches, the
worst case for a pattern filter) at the beginning, `caught-up` at the end.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from webhook import run_stack  # noqa: E402  (the tests' stack control)

DAEMON = ROOT / "build" / "handler" / "ipayout-webhookd"
QUERIES = ROOT / "monitoring" / "postgres-exporter" / "ipayout-queries.yaml"
EXPORTER = "/usr/bin/prometheus-postgres-exporter"
ENDPOINT = "bench-lag"
CONSUMERS = [("bench-lag-all", "beginning", "%"),
             ("bench-lag-payments", "beginning", "PAYMENT.%"),
             ("bench-lag-rare", "beginning", "NO.SUCH.EVENT.%"),
             ("bench-lag-caught-up", "end", "%")]


def log(msg):
    print(f"[consumer_lag {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(cur, sql, runs):
    """Median and max wall time of `sql` over `runs` runs, in ms, after one
    warm-up run (a scrape every 15 s finds the pages it read last time cached)."""
    cur.execute(sql)
    cur.fetchall()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        cur.execute(sql)
        cur.fetchall()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


def fill(conn, endpoint_id, events):
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ipayout.events WHERE endpoint_id = %s", (endpoint_id,))
        have = cur.fetchone()[0]
    if have >= events:
        log(f"reusing {have} events")
        return
    log(f"inserting {events - have} events")
    started = time.time()
    for lo in range(have, events, 10000):
        hi = min(events, lo + 10000)
        with conn.cursor() as cur:
            # One transaction per 10,000 rows; received_at spread over the last hour.
            cur.execute(
                "INSERT INTO ipayout.events (endpoint_id, event, dedup_key, payload, raw_body,"
                " signature, received_at)"
                " SELECT %s,"
                " CASE WHEN g %% 2 = 0 THEN 'PAYMENT.COMPLETED' ELSE 'TRANSFER.SENT' END,"
                " 'bench-' || g, jsonb_build_object('event', 'x', 'eventId', g), repeat('x', 400),"
                " 'valid', now() - interval '1 hour' + g * (interval '1 hour' / %s)"
                " FROM generate_series(%s, %s) g", (endpoint_id, events, lo + 1, hi))
        conn.commit()
    log(f"inserted in {time.time() - started:.0f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each query and scrape")
    ap.add_argument("--state-dir", default=str(ROOT / ".run" / "bench-lag"))
    ap.add_argument("--pg-port", default="29519")
    ap.add_argument("--https-port", default="9519")
    ap.add_argument("--exporter-port", default="29522")
    ap.add_argument("--keep", action="store_true", help="leave the stack running")
    args = ap.parse_args()
    if not DAEMON.exists():
        sys.exit(f"{DAEMON} is missing: build first (cmake -S . -B build && cmake --build build)")
    if not Path(EXPORTER).exists():
        sys.exit(f"{EXPORTER} is missing: apt-get install prometheus-postgres-exporter")

    env = dict(os.environ, IPAYOUT_STATE_DIR=args.state_dir, IPAYOUT_PG_PORT=args.pg_port,
               IPAYOUT_HTTPS_PORT=args.https_port, IPAYOUT_WORKERS="1", IPAYOUT_THREADS="2")
    log(f"starting a stack in {args.state_dir}")
    info = run_stack(env, "start", timeout=300)
    exporter = None
    try:
        conn = psycopg2.connect(info["DATABASE_URL"])
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM ipayout.endpoints WHERE name = %s", (ENDPOINT,))
            row = cur.fetchone()
        if not row:
            p = subprocess.run([str(DAEMON), "endpoint", "add", ENDPOINT, "--key=pk_bench_lag",
                                f"--notification-url={info['BASE_URL']}",
                                f"--database={info['DATABASE_URL']}"],
                               capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                sys.exit(f"endpoint add failed: {p.stderr}")
            with conn.cursor() as cur:
                cur.execute("SELECT id FROM ipayout.endpoints WHERE name = %s", (ENDPOINT,))
                row = cur.fetchone()
        conn.commit()
        fill(conn, row[0], args.events)
        conn.commit()  # fill() may have only read
        conn.autocommit = True
        with conn.cursor() as cur:
            for name, start, pattern in CONSUMERS:
                cur.execute("SELECT ipayout.unsubscribe(%s), ipayout.subscribe(%s, %s, %s)",
                            (name, name, start, pattern))
            # What autovacuum would have done by the time anyone scrapes.
            cur.execute("VACUUM ANALYZE ipayout.events")
            cur.execute("SELECT count(*), pg_size_pretty(pg_total_relation_size('ipayout.events'))"
                        " FROM ipayout.events")
            total, size = cur.fetchone()
            cur.execute("SELECT count(*) FROM ipayout.consumers")
            n_consumers = cur.fetchone()[0]
            cur.execute("SHOW shared_buffers")
            shared_buffers = cur.fetchone()[0]
            print(f"events in the table: {total} ({size} with indexes), consumers: {n_consumers}"
                  f" ({len(CONSUMERS) - 1} of them at the beginning of the feed),"
                  f" shared_buffers {shared_buffers}")

            cur.execute("SELECT consumer, pending, window_full, round(oldest_pending_age_seconds)"
                        " FROM ipayout.consumer_lag(10000) WHERE consumer LIKE 'bench-lag-%'")
            print("consumer_lag(10000):", "; ".join(
                f"{c} pending={p} capped={w} age={a}s" for c, p, w, a in cur.fetchall()))

            print(f"\nquery time, median / max of {args.runs} runs after one warm-up:")
            for label, sql in [
                    ("consumer_status()   [002, counts every pending event]",
                     "SELECT * FROM ipayout.consumer_status()"),
                    ("consumer_lag(10000) [004, the exporter's query]",
                     "SELECT * FROM ipayout.consumer_lag(10000)"),
                    ("consumer_lag(100000)",
                     "SELECT * FROM ipayout.consumer_lag(100000)")]:
                med, worst = timed(cur, sql, args.runs)
                print(f"  {label:55} {med:8.1f} ms / {worst:8.1f} ms")

            # The functions' own bodies, from the catalogue (so this stays the
            # query the migration shipped), under EXPLAIN ANALYZE. EXPLAIN of
            # the function call would show one opaque Function Scan.
            for fn, arg in [("consumer_status", None), ("consumer_lag", "10000")]:
                cur.execute("SELECT prosrc FROM pg_proc WHERE proname = %s"
                            " AND pronamespace = 'ipayout'::regnamespace", (fn,))
                body = cur.fetchone()[0].strip().rstrip(";")
                if arg:
                    body = body.replace("p_window", arg)
                # The function runs with jit off (004 sets it on consumer_lag;
                # 002's consumer_status runs with the server's default).
                cur.execute("SET jit = " + ("off" if fn == "consumer_lag" else "default"))
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + body)
                print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the body of {fn}({arg or ''}):")
                print("\n".join("  " + r[0] for r in cur.fetchall()))
            cur.execute("RESET jit")

            cur.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname ="
                        " 'ipayout_bench_exporter') THEN CREATE ROLE ipayout_bench_exporter LOGIN"
                        " IN ROLE ipayout_monitor; END IF; END $$")

        url = f"http://127.0.0.1:{args.exporter_port}/metrics"
        exporter = subprocess.Popen(
            [EXPORTER, f"--web.listen-address=127.0.0.1:{args.exporter_port}",
             f"--extend.query-path={QUERIES}", "--disable-default-metrics",
             "--disable-settings-metrics", "--log.level=warn"],
            env=dict(os.environ, DATA_SOURCE_NAME=f"postgresql://ipayout_bench_exporter@127.0.0.1:"
                                                  f"{args.pg_port}/ipayout?sslmode=disable"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 15
        while True:
            try:
                urllib.request.urlopen(url, timeout=30).read()
                break
            except OSError:
                if time.time() > deadline or exporter.poll() is not None:
                    sys.exit("the exporter did not answer")
                time.sleep(0.2)
        times, inner = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            text = urllib.request.urlopen(url, timeout=60).read().decode()
            times.append((time.perf_counter() - t) * 1000)
            for line in text.splitlines():
                if line.startswith("pg_exporter_last_scrape_duration_seconds "):
                    inner.append(float(line.split()[1]) * 1000)
        print(f"\nprometheus-postgres-exporter scrape of {url} (its database collector,"
              " pg_database_size, included):")
        print(f"  HTTP scrape time, median / max of {args.runs}: "
              f"{statistics.median(times):.1f} ms / {max(times):.1f} ms")
        print("  pg_exporter_last_scrape_duration_seconds, median:"
              f" {statistics.median(inner):.1f} ms")
        print("  " + "\n  ".join(line for line in text.splitlines()
                                 if line.startswith("ipayout_consumer_") and "bench-lag-" in line))
    finally:
        if exporter:
            exporter.terminate()
            exporter.wait(10)
        if not args.keep:
            run_stack(env, "stop", timeout=300)


if __name__ == "__main__":
    main()
