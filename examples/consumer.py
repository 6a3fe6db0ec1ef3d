#!/usr/bin/python3
"""Follow i-payout events from Python (psycopg2): LISTEN, catch up with poll on
connect and on every notification, ack after the work.

    DATABASE_URL=postgresql://billing@db.example.com/payments /usr/bin/python3 examples/consumer.py

Delivery is at-least-once: an event is handled again if the process stops
between handle() and the ack, so make handle() idempotent (or keep the work in
PostgreSQL: examples/consumer.sql). It exits on a database error: run it under
systemd (Restart=always) or a loop; it resumes after the last ack.
"""
import argparse
import json
import os
import select
import time

import psycopg2


def handle(event_id, event, payload):
    """Your work goes here. Runs at least once per event."""
    print(json.dumps({"id": event_id, "event": event, "payload": payload}), flush=True)


def catch_up(conn, consumer, budget):
    """Handles every event readable now (at most budget); returns how many."""
    done = 0
    with conn.cursor() as cur:
        while done < budget:
            batch = min(100, budget - done)
            cur.execute("SELECT id, event, payload FROM ipayout.poll(%s, %s) ORDER BY txid, id",
                        (consumer, batch))
            rows = cur.fetchall()
            for event_id, event, payload in rows:
                handle(event_id, event, payload)
            if rows:  # after the work: a crash before this line brings them again
                cur.execute("SELECT ipayout.ack(%s, %s)", (consumer, rows[-1][0]))
            done += len(rows)
            if len(rows) < batch:
                return done
    return done


def main():
    p = argparse.ArgumentParser(description="Follow i-payout events.")
    p.add_argument("--consumer", default=os.environ.get("IPAYOUT_CONSUMER", "billing"))
    p.add_argument("--events", default="%", help="LIKE pattern on the event name, e.g. PAYMENT.%%")
    p.add_argument("--max-events", type=int, default=0, help="exit after this many (0: never)")
    p.add_argument("--timeout", type=float, default=0, help="exit after this many seconds")
    args = p.parse_args()
    limit = args.max_events or float("inf")
    deadline = time.monotonic() + args.timeout if args.timeout else float("inf")

    conn = psycopg2.connect(os.environ.get("DATABASE_URL", ""))  # "": libpq's PG* variables
    conn.autocommit = True  # notifications arrive between transactions, not inside one
    with conn.cursor() as cur:
        cur.execute("LISTEN ipayout_events")  # before the first poll: nothing slips between
        cur.execute("SELECT ipayout.subscribe(%s, 'end', %s)", (args.consumer, args.events))

    handled = 0
    while True:
        conn.notifies.clear()  # wake-ups only: the table is the truth
        handled += catch_up(conn, args.consumer, limit - handled)
        left = deadline - time.monotonic()
        if handled >= limit or left <= 0:
            break
        if not conn.notifies:  # none came in while we caught up: wait for one
            # At most 5 s: an event can become readable without a notification of
            # its own (when a long transaction elsewhere ends).
            select.select([conn], [], [], min(5, left))
            conn.poll()
    conn.close()


if __name__ == "__main__":
    main()
