#!/usr/bin/python3
# (Debian's python3 explicitly, like scripts/test: a pyenv python3 earlier in PATH lacks psycopg2.)
"""The acknowledgement ledger: proves that every event answered 2xx is in
PostgreSQL exactly once.

It sends uniquely identified (eventId = uuid4), correctly signed events from
C concurrent senders for D seconds or N events, records every answer (status,
outcome, id, latency, Retry-After, whether an error body is the JSON the
contract promises), then checks the endpoint's rows in PostgreSQL:

  lost          acknowledged (2xx accepted/duplicate) but not in the table
  duplicated    eventIds with more than one row (the unique constraint should
                make this impossible; checked anyway)
  id_mismatch   acknowledged with an id other than the row's id
  unexpected    rows for the endpoint that the ledger never sent
  double_accepted  eventIds answered "accepted" more than once

Events that got no 2xx during the load are delivered again afterwards, the way
i-payout retries (fresh x-timestamp, same body), until they are acknowledged or
`settle` seconds have passed. A redelivery answered "duplicate" means the
event was committed although its first answer was an error: allowed (the
client retries, the receiver de-duplicates), and counted as failed_then_stored.
After settling, every event sent must be stored exactly once (unresolved = 0).

From a test:

    led = Ledger(url, key, database_url, ca=ca, senders=8).start()
    ... inject a fault ...
    report = led.finish()            # stop, settle, check
    assert report["lost"] == 0 and report["duplicated"] == 0

From the command line (creates an endpoint on the stack that scripts/stack
with the current IPAYOUT_* environment describes, unless --url/--key given):

    bench/ledger.py --senders 8 --duration 30 [--json]
    bench/ledger.py --url URL --key KEY --database DSN --ca CERT --events 5000

Only loopback targets: every request loop is bounded in time and count.
"""
import argparse
import hashlib
import http.client
import json
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from webhook import STACK, Stack, create_endpoint, sign  # noqa: E402  (one signing implementation)

# Absolute bounds, whatever the caller asks: this tool never runs unbounded.
MAX_DURATION_S = 3600
MAX_EVENTS = 5_000_000
LOOPBACK_PREFIXES = ("127.", "localhost", "::1", "[::1]")


class Result:
    """One answer (or failure to get one) for one delivery attempt."""
    __slots__ = ("eid", "t0", "t1", "status", "outcome", "id", "error", "retry_after",
                 "json_ok", "phase", "sender")

    def __init__(self, eid, t0, phase, sender):
        self.eid, self.t0, self.phase, self.sender = eid, t0, phase, sender
        self.t1 = None
        self.status = None      # HTTP status, None if no answer at all
        self.outcome = None     # "accepted" | "duplicate" for a 2xx
        self.id = None
        self.error = None       # error code from the JSON body, or the exception name
        self.retry_after = None
        self.json_ok = True     # an error answer carries {"error":..,"message":..}

    @property
    def acked(self):
        return self.status is not None and 200 <= self.status < 300 and \
            self.outcome in ("accepted", "duplicate")

    @property
    def label(self):
        if self.status is None:
            return f"no answer ({self.error})"
        if self.acked:
            return f"{self.status} {self.outcome}"
        return f"{self.status} {self.error}" if self.error else str(self.status)

    @property
    def latency_ms(self):
        return (self.t1 - self.t0) * 1000.0


def abortive_close(conn):
    """Closes with RST instead of FIN (SO_LINGER 0), after the whole answer has
    been read: the client socket then skips TIME_WAIT. Thousands of sockets in
    TIME_WAIT, each holding a local port of the ephemeral range for a minute,
    would otherwise keep a server from binding a port in that range when a
    fault test or a later test restarts it."""
    if conn.sock is not None:
        try:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    conn.close()


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


class Ledger:
    def __init__(self, url, key, database_url, ca=None, senders=8, duration=None, events=None,
                 rate=0.0, timeout=20.0, event_name="PAYMENT.CREATED", pad=0, tag=None):
        u = urllib.parse.urlsplit(url)
        if not (u.hostname or "").startswith(LOOPBACK_PREFIXES):
            raise ValueError(f"the ledger only sends to loopback addresses, not {u.hostname}")
        self.url, self.key, self.database_url = url, key, database_url
        self._u = u
        self._path = u.path + (("?" + u.query) if u.query else "")
        self.token = u.path.rsplit("/", 1)[-1]
        if u.scheme == "https":
            self._ctx = ssl.create_default_context(cafile=ca) if ca else \
                ssl._create_unverified_context()
        else:
            self._ctx = None
        self.senders = max(1, int(senders))
        self.duration = min(float(duration), MAX_DURATION_S) if duration else None
        self.max_events = min(int(events), MAX_EVENTS) if events else None
        if self.duration is None and self.max_events is None:
            self.duration = 10.0
        if self.duration is None:
            self.duration = MAX_DURATION_S
        self.rate = float(rate or 0)
        self.timeout = float(timeout)
        self.event_name = event_name
        self.pad = "x" * int(pad)
        self.tag = tag or uuid.uuid4().hex[:8]

        self.results = []          # every attempt, in completion order
        self.bodies = {}           # eid -> body bytes (for redelivery)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._issued = 0
        self.t_start = None
        self.t_load_end = None
        self.report = None

    # ------------------------------------------------------------ sending

    def _body(self, sender, seq):
        eid = str(uuid.uuid4())
        doc = {"event": self.event_name, "eventId": eid, "ledger": self.tag,
               "sender": sender, "seq": seq, "amount": {"value": "12.34", "currency": "USD"}}
        if self.pad:
            doc["pad"] = self.pad
        return eid, json.dumps(doc, separators=(",", ":")).encode()

    def deliver(self, eid, body, phase="load", sender=-1):
        """One signed POST on a fresh connection (as a webhook sender does)."""
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "x-timestamp": ts,
                   "x-signature": sign(self.key, ts, self.url, body),
                   "User-Agent": "ipayout-ledger"}
        r = Result(eid, time.monotonic(), phase, sender)
        host, port = self.target(eid, phase)
        if self._ctx is not None:
            conn = http.client.HTTPSConnection(host, port, context=self._ctx, timeout=self.timeout)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            r.status = resp.status
            r.retry_after = resp.getheader("Retry-After")
            try:
                doc = json.loads(data)
            except ValueError:
                doc = None
            if 200 <= resp.status < 300:
                if isinstance(doc, dict):
                    r.outcome = doc.get("status")
                    r.id = doc.get("id")
            else:
                r.json_ok = isinstance(doc, dict) and isinstance(doc.get("error"), str) and \
                    isinstance(doc.get("message"), str)
                r.error = doc.get("error") if isinstance(doc, dict) else "non-json-body"
        except (OSError, http.client.HTTPException) as e:
            r.error = type(e).__name__
        finally:
            abortive_close(conn)
        r.t1 = time.monotonic()
        with self._lock:
            self.results.append(r)
        return r

    def target(self, eid, phase):
        """Where a delivery goes: the URL's host and port. A subclass may send to
        another receiver host (a load balancer's choice); the signature still
        covers self.url, the notification URL i-payout signs."""
        return self._u.hostname, self._u.port

    def _take_ticket(self):
        with self._lock:
            if self.max_events is not None and self._issued >= self.max_events:
                return None
            n = self._issued
            self._issued += 1
            return n

    def _sender(self, n):
        seq = 0
        deadline = self.t_start + self.duration
        while not self._stop.is_set() and time.monotonic() < deadline:
            ticket = self._take_ticket()
            if ticket is None:
                break
            if self.rate > 0:
                # Global pacing: ticket k is due at t_start + k/rate.
                due = self.t_start + ticket / self.rate
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
            eid, body = self._body(n, seq)
            seq += 1
            with self._lock:
                self.bodies[eid] = body
            self.deliver(eid, body, "load", n)

    def start(self):
        self.t_start = time.monotonic()
        for i in range(self.senders):
            t = threading.Thread(target=self._sender, args=(i,), daemon=True,
                                 name=f"ledger-sender-{i}")
            t.start()
            self._threads.append(t)
        return self

    def wait(self):
        """Waits until the load is over (duration or event count reached)."""
        for t in self._threads:
            t.join()
        if self.t_load_end is None:
            self.t_load_end = time.monotonic()

    def stop(self):
        self._stop.set()
        self.wait()

    # ------------------------------------------------------------ settling

    def settle(self, seconds=15.0, interval=0.25):
        """Redelivers every event that has no 2xx yet, like i-payout would, until
        each is acknowledged or `seconds` pass. Returns the eids left unresolved."""
        deadline = time.monotonic() + seconds
        while True:
            pending = sorted(self.unacked())
            if not pending or time.monotonic() >= deadline:
                return pending
            # As many redelivering threads as there were senders.
            lock = threading.Lock()

            def redeliver():
                while time.monotonic() < deadline:
                    with lock:
                        if not pending:
                            return
                        eid = pending.pop()
                    self.deliver(eid, self.bodies[eid], "settle")

            workers = [threading.Thread(target=redeliver, daemon=True)
                       for _ in range(min(self.senders, len(pending)))]
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            if self.unacked():
                time.sleep(interval)

    def unacked(self):
        with self._lock:
            acked = {r.eid for r in self.results if r.acked}
            return set(self.bodies) - acked

    # ------------------------------------------------------------ checking

    def stored(self):
        """eventId -> [row ids] for this endpoint (found by its token's hash)."""
        conn = psycopg2.connect(self.database_url, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT e.payload->>'eventId', e.id, e.payload->>'ledger' FROM ipayout.events e "
                    "JOIN ipayout.endpoints p ON p.id = e.endpoint_id WHERE p.token_hash = %s",
                    (psycopg2.Binary(hashlib.sha256(self.token.encode()).digest()),))
                rows = cur.fetchall()
        finally:
            conn.close()
        out = {}
        for eid, rid, tag in rows:
            out.setdefault((eid, tag), []).append(rid)
        return out

    def check(self):
        rows = self.stored()
        by_eid = {}
        unexpected = 0
        for (eid, tag), ids in rows.items():
            if tag != self.tag or eid not in self.bodies:
                unexpected += len(ids)
            else:
                by_eid[eid] = ids
        with self._lock:
            results = list(self.results)
        acked = {}
        accepted = {}
        failed_first = set()
        first = {}
        for r in results:
            first.setdefault(r.eid, r)
            if r.acked:
                acked.setdefault(r.eid, []).append(r)
                if r.outcome == "accepted":
                    accepted[r.eid] = accepted.get(r.eid, 0) + 1
        for eid, r in first.items():
            if not r.acked:
                failed_first.add(eid)
        lost = [e for e in acked if e not in by_eid]
        duplicated = [e for e, ids in by_eid.items() if len(ids) > 1]
        id_mismatch = [e for e, rs in acked.items() if e in by_eid and
                       any(r.id not in by_eid[e] for r in rs)]
        double_accepted = [e for e, n in accepted.items() if n > 1]
        failed_then_stored = [e for e in failed_first if e in by_eid and
                              any(r.outcome == "duplicate" for r in acked.get(e, []))]
        unresolved = [e for e in self.bodies if e not in acked]
        never_stored = [e for e in self.bodies if e not in by_eid]

        load = [r for r in results if r.phase == "load"]
        by_status = {}
        for r in load:
            by_status[r.label] = by_status.get(r.label, 0) + 1
        settle_by_status = {}
        for r in results:
            if r.phase == "settle":
                settle_by_status[r.label] = settle_by_status.get(r.label, 0) + 1
        lat = [r.latency_ms for r in load]
        elapsed = max(1e-9, (self.t_load_end or time.monotonic()) - self.t_start)
        load_acked = sum(1 for r in load if r.acked)
        bad_errors = [r for r in results if r.status is not None and not r.acked and not r.json_ok]
        no_retry_after = [r for r in results if r.status == 503 and not r.retry_after]
        self.report = {
            "url_path": "/ipayout/webhooks/<token>",
            "tag": self.tag,
            "senders": self.senders,
            "duration_s": round(elapsed, 2),
            "sent": len(load),
            "events": len(self.bodies),
            "acknowledged": len(acked),
            "acknowledged_during_load": load_acked,
            "not_acknowledged_during_load": len(load) - load_acked,
            "by_status": dict(sorted(by_status.items(), key=lambda kv: -kv[1])),
            "settle_by_status": settle_by_status,
            "events_per_s": round(load_acked / elapsed, 1),
            "p50_ms": round(percentile(lat, 50), 1) if lat else None,
            "p99_ms": round(percentile(lat, 99), 1) if lat else None,
            "max_ms": round(max(lat), 1) if lat else None,
            "stored": sum(len(v) for v in by_eid.values()),
            "lost": len(lost),
            "duplicated": len(duplicated),
            "id_mismatch": len(id_mismatch),
            "double_accepted": len(double_accepted),
            "unexpected": unexpected,
            "failed_then_stored": len(failed_then_stored),
            "unresolved": len(unresolved),
            "never_stored": len(never_stored),
            "error_bodies_not_json": len(bad_errors),
            "503_without_retry_after": len(no_retry_after),
            "samples": {
                "lost": lost[:5], "duplicated": duplicated[:5], "id_mismatch": id_mismatch[:5],
                "unresolved": unresolved[:5],
            },
        }
        return self.report

    def finish(self, settle=None):
        """Stops the load, redelivers what was not acknowledged, checks the table.
        settle: seconds for redelivery; default 15 s plus 10 ms per unacknowledged
        event (a long outage leaves thousands), at most 300 s. 0: none."""
        self.stop()
        if settle is None:
            settle = min(300.0, 15.0 + 0.01 * len(self.unacked()))
        if settle:
            self.settle(settle)
        return self.check()

    # ------------------------------------------------------------ timeline helpers

    def window(self, t0, t1=None):
        """Attempts that started in [t0, t1) (monotonic clock)."""
        with self._lock:
            return [r for r in self.results if r.t0 >= t0 and (t1 is None or r.t0 < t1)]

    def first_ack_after(self, t):
        """The earliest completed 2xx for a request that started at or after t."""
        with self._lock:
            done = [r.t1 for r in self.results if r.acked and r.t0 >= t]
        return min(done) if done else None

    def acked_count(self):
        with self._lock:
            return sum(1 for r in self.results if r.acked)

    def clean(self, report=None):
        """True when the report shows the acknowledgement promise held."""
        rep = report or self.report
        return all(rep[k] == 0 for k in ("lost", "duplicated", "id_mismatch", "double_accepted",
                                         "unexpected"))


def format_report(rep):
    lines = [
        f"senders={rep['senders']} duration={rep['duration_s']}s sent={rep['sent']} "
        f"acknowledged={rep['acknowledged']} ({rep['acknowledged_during_load']} during load) "
        f"events/s={rep['events_per_s']} p50={rep['p50_ms']}ms p99={rep['p99_ms']}ms "
        f"max={rep['max_ms']}ms",
        "by status: " + ", ".join(f"{k}: {v}" for k, v in rep["by_status"].items()),
    ]
    if rep["settle_by_status"]:
        lines.append("redeliveries: " + ", ".join(f"{k}: {v}" for k, v in
                                                  rep["settle_by_status"].items()))
    lines.append(
        f"lost={rep['lost']} duplicated={rep['duplicated']} id_mismatch={rep['id_mismatch']} "
        f"double_accepted={rep['double_accepted']} unexpected={rep['unexpected']} "
        f"unresolved={rep['unresolved']} failed_then_stored={rep['failed_then_stored']} "
        f"error_bodies_not_json={rep['error_bodies_not_json']} "
        f"503_without_retry_after={rep['503_without_retry_after']}")
    return "\n".join(lines)


TABLE_HEADER = ("| Scenario | Load | Faults injected | Sent | Acknowledged | Failed (then found stored) "
                "| Lost | Duplicated | Recovery | Notes |\n"
                "|---|---|---|---:|---:|---:|---:|---:|---|---|")


def format_rows(rows):
    """RELIABILITY.md rows from the JSON lines tests/integration/test_faults.py writes."""
    out = [TABLE_HEADER]
    for r in rows:
        out.append(f"| {r['scenario']} | {r['senders']} senders, {r['duration_s']:.0f} s, "
                   f"{r['events_per_s']:.0f} ev/s, p99 {r['p99_ms']:.0f} ms | {r['faults']} | "
                   f"{r['sent']} | {r['acknowledged']} | {r['failed']} ({r['failed_then_stored']}) | "
                   f"{r['lost']} | {r['duplicated']} | {r['recovery']} | {r['notes']} |")
    return "\n".join(out)


def stack_from_env():
    """The stack scripts/stack describes with the current IPAYOUT_* environment
    (its defaults: the dev stack)."""
    p = subprocess.run([str(STACK), "env"], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"scripts/stack env failed: {p.stderr}")
    info = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    s = Stack(info["STATE_DIR"], urllib.parse.urlsplit(info["DATABASE_URL"]).port,
              urllib.parse.urlsplit(info["BASE_URL"]).port)
    s.run("env")
    return s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="endpoint URL (default: create an endpoint on the stack)")
    ap.add_argument("--key", help="the endpoint's i-payout key (with --url)")
    ap.add_argument("--database", help="PostgreSQL URL that can read ipayout.events "
                    "(default: the stack's DATABASE_URL)")
    ap.add_argument("--ca", help="CA certificate for https (default: the stack's)")
    ap.add_argument("--senders", "-c", type=int, default=8)
    ap.add_argument("--duration", "-d", type=float, help="seconds of load (default 10)")
    ap.add_argument("--events", "-n", type=int, help="stop after this many events")
    ap.add_argument("--rate", type=float, default=0, help="events/s over all senders (0: as fast as possible)")
    ap.add_argument("--pad", type=int, default=0, help="extra body bytes per event")
    ap.add_argument("--settle", type=float, help="seconds to redeliver unacknowledged events "
                    "(default: 15 + 0.01 per unacknowledged event, at most 300)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--table", metavar="JSONL", help="only print the RELIABILITY.md table of the "
                    "rows in this file (written by scripts/faults)")
    args = ap.parse_args(argv)

    if args.table:
        with open(args.table) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        print(format_rows(rows))
        return 0 if all(r["lost"] == 0 and r["duplicated"] == 0 for r in rows) else 1

    if args.url:
        if not args.key or not args.database:
            ap.error("--url needs --key and --database")
        url, key, dsn, ca = args.url, args.key, args.database, args.ca
    else:
        stack = stack_from_env()
        ep = create_endpoint(stack, "ledger-" + uuid.uuid4().hex[:10])
        url, key = ep.url, ep.key
        dsn = args.database or stack.database_url
        ca = args.ca or stack.ca
    led = Ledger(url, key, dsn, ca=ca, senders=args.senders, duration=args.duration,
                 events=args.events, rate=args.rate, pad=args.pad)
    led.start()
    try:
        led.wait()
    except KeyboardInterrupt:
        led.stop()
    rep = led.finish(settle=args.settle)
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    return 0 if led.clean(rep) and rep["unresolved"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
