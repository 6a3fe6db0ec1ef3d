#!/usr/bin/python3
"""Wake-up latency: from the 200 of a webhook POST to its line on the stdout of
`ipayout-events tail --follow --consumer <unique>` (NOTIFY -> LISTEN -> poll ->
print). Not a test: it measures, it does not pass or fail.

    bench/wakeup_latency.py [--events 1000]

It needs a built tree (cmake --build build) and a stack: by default its own,
started with scripts/stack in .run/bench-wakeup (PostgreSQL on 29517, HTTPS on
9517 and the two ports after it) and stopped afterwards; --keep leaves it
running. --state-dir, --pg-port and --https-port point it at another stack,
e.g. the dev stack of scripts/up (.run/dev, 15433, 8443), which it reuses as it
is. Either way it adds one endpoint and one consumer (the consumer is removed
at the end).

Events are posted one at a time over one keep-alive HTTPS connection, each after
the previous one's line appeared, so every number is one event's own latency.
A line can appear before Python has read the 200 (PostgreSQL notifies at
COMMIT, the worker answers after it): such latencies are negative, not errors.
"""
import argparse
import http.client
import json
import os
import queue
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from webhook import run_stack, sign  # noqa: E402  (the tests' signature and stack control)

STACK = ROOT / "scripts" / "stack"
DAEMON = ROOT / "build" / "handler" / "ipayout-webhookd"
CLI = ROOT / "build" / "cli" / "ipayout-events"
KEY = "pk_bench_wakeup"


def log(msg):
    print(f"[wakeup {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile(sorted_values, q):
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--state-dir", default=str(ROOT / ".run" / "bench-wakeup"))
    ap.add_argument("--pg-port", default="29517")
    ap.add_argument("--https-port", default="9517")
    ap.add_argument("--keep", action="store_true", help="leave the stack running")
    args = ap.parse_args()
    for binary in (DAEMON, CLI):
        if not binary.exists():
            sys.exit(f"{binary} is missing: build first "
                     "(cmake -S . -B build && cmake --build build)")

    env = dict(os.environ, IPAYOUT_STATE_DIR=args.state_dir, IPAYOUT_PG_PORT=args.pg_port,
               IPAYOUT_HTTPS_PORT=args.https_port)
    already_running = subprocess.run([str(STACK), "status"], env=env,
                                     capture_output=True).returncode == 0
    log("reusing the running stack" if already_running else f"starting a stack in {args.state_dir}")
    info = run_stack(env, "start", timeout=300)
    name = "wakeup-" + uuid.uuid4().hex[:8]
    consumer = "bench-" + name
    tail = None
    try:
        p = subprocess.run([str(DAEMON), "endpoint", "add", name, f"--key={KEY}",
                            f"--notification-url={info['BASE_URL']}", "--policy=required",
                            f"--database={info['DATABASE_URL']}"],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            sys.exit(f"endpoint add failed: {p.stderr}")
        url = p.stdout.strip()
        path = url.split(info["BASE_URL"], 1)[1]

        ctx = ssl.create_default_context(cafile=info["CA_CERT"])
        conn = http.client.HTTPSConnection("127.0.0.1", int(args.https_port), context=ctx,
                                           timeout=30)

        def post(body):
            ts = str(int(time.time()))
            conn.request("POST", path, body=body, headers={
                "Content-Type": "application/json", "x-timestamp": ts,
                "x-signature": sign(KEY, ts, url, body)})
            r = conn.getresponse()
            data = r.read()
            return r.status, data

        # Each worker process sees a new endpoint within endpoint_refresh_ms (1 s)
        # of the others: wait for the first, then for the rest.
        deadline = time.time() + 15
        while post(b"{}")[0] == 404:
            if time.time() > deadline:
                sys.exit("the new endpoint never became visible to the workers")
            time.sleep(0.1)
        time.sleep(1.2)

        lines = queue.Queue()
        tail = subprocess.Popen([str(CLI), "tail", "--follow", "--consumer", consumer,
                                 "--database", info["CONSUMER_DATABASE_URL"]],
                                stdout=subprocess.PIPE, text=True, bufsize=1)

        def read():
            for line in tail.stdout:
                lines.put((time.monotonic(), line))

        threading.Thread(target=read, daemon=True).start()
        # It subscribes after LISTEN: once the consumer exists, it is listening.
        deadline = time.time() + 15
        while subprocess.run(["psql", "-X", "-Atc",
                              f"SELECT 1 FROM ipayout.consumers WHERE name = '{consumer}'",
                              info["DATABASE_URL"]], capture_output=True,
                             text=True).stdout.strip() != "1":
            if time.time() > deadline or tail.poll() is not None:
                sys.exit("ipayout-events never subscribed")
            time.sleep(0.05)

        log(f"posting {args.events} events")
        latencies = []
        for i in range(args.events):
            body = json.dumps({"event": "PAYMENT.COMPLETED", "eventId": str(uuid.uuid4()),
                               "n": i}).encode()
            status, data = post(body)
            answered = time.monotonic()
            if status != 200:
                sys.exit(f"POST answered {status}: {data[:200]!r}")
            event_id = json.loads(data)["id"]
            while True:
                try:
                    seen, line = lines.get(timeout=10)
                except queue.Empty:
                    sys.exit(f"event {event_id} never reached ipayout-events")
                obj = json.loads(line)
                if obj["endpoint"] == name and obj["id"] == event_id:
                    latencies.append((seen - answered) * 1000)
                    break
        conn.close()

        s = sorted(latencies)
        print(f"wake-up latency, POST 200 -> ipayout-events line, {len(s)} events (ms):")
        print(f"  median {statistics.median(s):.2f}  p90 {percentile(s, 90):.2f}  "
              f"p99 {percentile(s, 99):.2f}  max {s[-1]:.2f}  min {s[0]:.2f}")
    finally:
        if tail is not None and tail.poll() is None:
            tail.terminate()
            try:
                tail.wait(10)
            except subprocess.TimeoutExpired:
                tail.kill()
        subprocess.run(["psql", "-X", "-qAtc", f"SELECT ipayout.unsubscribe('{consumer}')",
                        info["DATABASE_URL"]], capture_output=True)
        if not already_running and not args.keep:
            log("stopping the stack")
            run_stack(env, "stop", timeout=300)


if __name__ == "__main__":
    main()
