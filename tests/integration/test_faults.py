"""Faults injected under load, each with the acknowledgement ledger
(bench/ledger.py) running underneath: every event answered 2xx must be in
PostgreSQL exactly once (lost = 0, duplicated = 0), every failure must be a 503
with Retry-After and a JSON body, and the service must heal by itself.

Short by default (a few seconds of load per fault, for CI). scripts/faults runs
the same scenarios longer: IPAYOUT_FAULTS_SECONDS is the load per scenario,
and IPAYOUT_FAULTS_REPORT a JSON-lines file that gets one row per scenario
(the rows of RELIABILITY.md).

Covered elsewhere, not repeated here: a single PostgreSQL outage and a pool
started without PostgreSQL (one request each) and the SIGTERM drain under load
in test_resilience.py; a killed worker being replaced in test_process_model.py.
The SIGTERM scenario below runs only in the long version.
"""
import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from webhook import ROOT, STACK, create_endpoint, process_alive, request

sys.path.insert(0, str(ROOT / "bench"))
from ledger import Ledger, format_report  # noqa: E402

LONG_SECONDS = float(os.environ.get("IPAYOUT_FAULTS_SECONDS") or 0)
LONG = LONG_SECONDS > 0
REPORT = os.environ.get("IPAYOUT_FAULTS_REPORT")
SENDERS = int(os.environ.get("IPAYOUT_FAULTS_SENDERS") or 8)
# The worker-SIGKILL test runs the pool as 2 workers x 8 threads (pool_with):
# with the default single worker, every kill would take the whole pool.
THREADS = 8
WORKERS = 2


def load_seconds(short):
    return LONG_SECONDS if LONG else short


# ---------------------------------------------------------------- helpers

def stack_cmd(stack, *args, timeout=120, **env):
    """scripts/stack with the test stack's settings plus extra environment."""
    deadline = time.monotonic() + 65
    while True:
        p = subprocess.run([str(STACK), *args], env=dict(stack.env, **env), capture_output=True,
                           text=True, timeout=timeout)
        # The test ports lie in Linux's ephemeral range (32768-60999): a client
        # socket of this machine (any process's, even one in TIME_WAIT, for up
        # to 60 s) may hold PostgreSQL's port. Wait for it rather than fail.
        if p.returncode == 0 or "Address already in use" not in p.stderr or \
                time.monotonic() > deadline:
            break
        time.sleep(2.0)
    assert p.returncode == 0, f"scripts/stack {' '.join(args)}: {p.stderr}"


def ready_endpoint(stack, prefix):
    """A fresh endpoint that every worker knows (create_endpoint waits for that)."""
    return create_endpoint(stack, f"{prefix}-{uuid.uuid4().hex[:8]}")


def ledger_for(stack, ep, seconds, senders=SENDERS):
    """A ledger on `ep`; tests stop it (led.stop()) once their faults have healed,
    `seconds` only bounds it."""
    return Ledger(ep.url, ep.key, stack.database_url, ca=stack.ca, senders=senders,
                  duration=seconds)


class LogTail:
    """The pool log from the moment this object was made."""

    def __init__(self, stack):
        self.path = Path(stack.info["STATE_DIR"], "webhookd.log")
        self.start = self.path.stat().st_size if self.path.exists() else 0

    def text(self):
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")

    def wait_for(self, needle, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return True
            time.sleep(0.01)
        return False


def workers_of(master):
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return {int(x) for x in out.split()}


def thread_count(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def thread_states(pid):
    """The scheduler state of each thread (R = running, S = sleeping)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                out.append(f.read().rsplit(") ", 1)[1].split()[0])
        except OSError:
            pass
    return out


def superuser(stack):
    conn = psycopg2.connect(stack.database_url, connect_timeout=5)
    conn.autocommit = True
    return conn


def wait_for_postgres(stack, timeout=75):
    """Polls until PostgreSQL accepts a connection; returns the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            psycopg2.connect(stack.database_url, connect_timeout=1).close()
            return time.monotonic()
        except psycopg2.OperationalError:
            time.sleep(0.02)
    raise AssertionError("PostgreSQL did not come back")


def assert_promise_kept(rep):
    """The ledger's verdict: nothing acknowledged lost or doubled, every event
    stored once after redelivery, every failure a JSON 503 with Retry-After."""
    print(format_report(rep))
    assert rep["lost"] == 0, rep["samples"]
    assert rep["duplicated"] == 0, rep["samples"]
    assert rep["id_mismatch"] == 0, rep["samples"]
    assert rep["double_accepted"] == 0
    assert rep["unexpected"] == 0
    assert rep["unresolved"] == 0, rep["samples"]
    assert rep["error_bodies_not_json"] == 0, rep["by_status"]
    assert rep["503_without_retry_after"] == 0, rep["by_status"]
    assert rep["acknowledged_during_load"] > 0


def failures_are_503(rep):
    other = {k: v for k, v in rep["by_status"].items()
             if not k.startswith("200 ") and not k.startswith("503 ")}
    assert not other, f"failures other than 503: {other}"


def record(scenario, rep, faults, recovery, notes=""):
    row = {"scenario": scenario, "senders": rep["senders"], "duration_s": rep["duration_s"],
           "faults": faults, "sent": rep["sent"],
           "acknowledged": rep["acknowledged_during_load"],
           "failed": rep["not_acknowledged_during_load"],
           "failed_then_stored": rep["failed_then_stored"],
           "lost": rep["lost"], "duplicated": rep["duplicated"],
           "unresolved": rep["unresolved"], "recovery": recovery,
           "events_per_s": rep["events_per_s"], "p99_ms": rep["p99_ms"], "max_ms": rep["max_ms"],
           "notes": notes}
    print("ROW " + json.dumps(row))
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(json.dumps(row) + "\n")


def sleep_until(t):
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def first_ack_after(led, t, what, timeout=10):
    """When the first 2xx for a request started at or after `t` completed: the
    service healed from a fault that ended at `t` (`what`). The ledger's own
    times, so how often this polls does not change the recovery measured."""
    ack = led.first_ack_after(t)
    while ack is None and time.monotonic() < t + timeout:
        time.sleep(0.01)
        ack = led.first_ack_after(t)
    assert ack is not None, f"no 2xx within {timeout} s of {what}"
    return ack


class HeldFault:
    """A fault put in place under load for a while, then removed: when it was
    in place (start, end), when removing it was done (removed), and how long
    after that the first 2xx came (recovery)."""

    def __init__(self, led, inject, remove, during):
        """inject(), then during() (the test's probes, or a sleep), then
        remove(), also when inject() or during() failed (a fault half in place
        is still one to remove)."""
        try:
            inject()
            self.start = time.monotonic()
            during()
            self.end = time.monotonic()
        finally:
            remove()
        self.removed = time.monotonic()
        self.recovery = first_ack_after(led, self.removed, "the fault's removal") - self.removed


def start_postgres(stack):
    """pg-start, run in the background so the moment PostgreSQL first accepts a
    connection is seen (scripts/stack returns later). Returns (when pg-start
    was run, when PostgreSQL accepted)."""
    t_cmd = time.monotonic()
    starter = threading.Thread(target=stack_cmd, args=(stack, "pg-start"))
    starter.start()
    t_back = wait_for_postgres(stack)
    starter.join(60)
    return t_cmd, t_back


def finish_load(led, seconds):
    """At least `seconds` of load, and past the last fault; then the ledger's
    report (redelivery and the table check included)."""
    sleep_until(led.t_start + seconds)
    led.stop()
    return led.finish()


@contextlib.contextmanager
def pool_with(stack, **env):
    """The pool restarted with these IPAYOUT_<SETTING> variables, and with the
    daemon's defaults again afterwards."""
    stack_cmd(stack, "pool-stop")
    stack_cmd(stack, "pool-start", **env)
    try:
        yield
    finally:
        stack_cmd(stack, "pool-stop")
        stack_cmd(stack, "pool-start")


# ---------------------------------------------------------------- worker SIGKILL

@pytest.fixture
def two_worker_pool(stack):
    with pool_with(stack, IPAYOUT_WORKERS=str(WORKERS), IPAYOUT_THREADS=str(THREADS)):
        yield


def test_sigkill_workers_under_load(stack, two_worker_pool):
    """Workers SIGKILLed repeatedly, one or all at once: each is replaced within
    a second, only the requests it had in flight fail (nginx 502 -> JSON 503;
    connections waiting in the listen backlog are served by the others or the
    replacement), nothing acknowledged is lost."""
    ep = ready_endpoint(stack, "kill")
    log = LogTail(stack)
    master = stack.pool_pid()
    seconds = load_seconds(7)
    led = ledger_for(stack, ep, seconds + 120).start()
    first_seen = {pid: time.monotonic() - 10 for pid in workers_of(master)}
    replaced, serving, kills, rounds, all_at_once = [], [], 0, 0, 0
    time.sleep(1.0)
    while time.monotonic() - led.t_start < seconds - 1.5:
        # Kill workers that have run for more than a second (the master delays
        # replacing a worker that died right after starting): the oldest one,
        # or, every third round, all of them at once.
        now = time.monotonic()
        live = workers_of(master)
        for p in live:
            first_seen.setdefault(p, now)
        old = [p for p in sorted(live, key=first_seen.get) if now - first_seen[p] > 1.0]
        kill_all = rounds % 3 == 1  # the 2nd, 5th, 8th... round
        if not old or (kill_all and len(old) < WORKERS):
            time.sleep(0.05)
            continue
        rounds += 1
        victims = old if kill_all else old[:1]
        all_at_once += len(victims) == WORKERS
        t_kill = time.monotonic()
        for v in victims:
            os.kill(v, signal.SIGKILL)
        kills += len(victims)
        new = set()
        while time.monotonic() - t_kill < 5:
            live = workers_of(master)
            new = live - set(first_seen)
            if not live & set(victims) and len(live) == WORKERS and len(new) == len(victims):
                break
            time.sleep(0.002)
        t_new = time.monotonic()
        assert len(new) == len(victims), f"workers {victims} were not replaced within 5 s"
        replaced.append(t_new - t_kill)
        for pid in new:
            first_seen[pid] = t_new
            assert log.wait_for(f'pid={pid} msg="endpoints loaded"', 5), "replacement never served"
        serving.append(time.monotonic() - t_kill)
        sleep_until(t_kill + 1.3)
    rep = finish_load(led, seconds)
    print(f"rounds={rounds} ({all_at_once} killing every worker) kills={kills} replaced: max "
          f"{max(replaced):.3f} s, serving (endpoints loaded): max {max(serving):.3f} s")
    assert_promise_kept(rep)
    failures_are_503(rep)
    assert rounds >= 3 and all_at_once >= 1
    assert max(replaced) < 1.0
    assert max(serving) < 1.0
    # What may fail per kill: the requests in flight in the killed process (at
    # most its threads), and requests its replacement accepts in the moment
    # before it has loaded the endpoints, which it answers 503 by design (it
    # cannot tell a real token from a wrong one yet; "serving" bounds that
    # moment below 1 s). Seen under ASan: 47 failures for 5 kills.
    assert rep["not_acknowledged_during_load"] <= kills * THREADS * 2, rep["by_status"]
    logged = log.text().count("worker killed, replacing it")
    assert logged == kills, f"{logged} replacements logged for {kills} kills"
    record("worker SIGKILL", rep, f"{kills} workers SIGKILLed in {rounds} rounds every ~1.3 s "
           f"(one worker; every third round all {WORKERS} at once)",
           f"replaced max {max(replaced) * 1000:.0f} ms, serving max {max(serving) * 1000:.0f} ms",
           f"{rep['not_acknowledged_during_load']} failed (<= {2 * THREADS} per kill: in flight, "
           f"or taken by the replacement before its endpoints were loaded)")


# ---------------------------------------------------------------- PostgreSQL

def test_postgres_connections_cut_under_load(stack):
    """pg_terminate_backend on the workers' sessions, every 0.5 s: the writer
    reconnects; no 200 for an uncommitted event (the ledger would find it lost)."""
    ep = ready_endpoint(stack, "cut")
    log = LogTail(stack)
    seconds = load_seconds(5)
    led = ledger_for(stack, ep, seconds + 120).start()
    cut_times, terminated = [], 0
    db = superuser(stack)
    try:
        time.sleep(0.5)
        while time.monotonic() - led.t_start < seconds - 1.0:
            with db.cursor() as cur:
                cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = 'ipayout-webhookd'")
                terminated += cur.fetchone()[0]
            cut_times.append(time.monotonic())
            time.sleep(0.5)
    finally:
        db.close()
    sleep_until(led.t_start + seconds)  # at least `seconds` of load, and past the last fault
    led.stop()
    cuts = len(cut_times)
    acks = [led.first_ack_after(t) for t in cut_times]
    gaps = [a - t for a, t in zip(acks, cut_times) if a is not None]
    rep = led.finish()
    print(f"cuts={cuts} sessions terminated={terminated} first 2xx after a cut: "
          f"max {max(gaps) * 1000:.0f} ms")
    assert_promise_kept(rep)
    failures_are_503(rep)
    assert terminated >= cuts  # each cut hit at least one worker session
    assert len(gaps) == cuts and max(gaps) < 2.0
    reconnected = "database connected" in log.text()
    assert reconnected, "no reconnection logged"
    record("PostgreSQL sessions cut", rep,
           f"{cuts} x pg_terminate_backend of every worker session ({terminated} sessions)",
           f"next 2xx max {max(gaps) * 1000:.0f} ms after a cut")


def test_postgres_restart_under_load(stack):
    """PostgreSQL stopped (fast: in-flight transactions aborted) and started again
    under load: 503 + Retry-After while it is down, 200 again within 2 s of it
    accepting connections."""
    ep = ready_endpoint(stack, "restart")
    seconds = load_seconds(7)
    down_for = 3.0 if LONG else 2.0
    period = 12.0
    led = ledger_for(stack, ep, seconds + 120).start()
    recoveries, outages, down_answers = [], 0, []
    try:
        time.sleep(1.0)
        while outages == 0 or time.monotonic() - led.t_start < seconds - period:
            cycle = time.monotonic()
            stack_cmd(stack, "pg-stop")
            t_down = time.monotonic()
            outages += 1
            time.sleep(down_for)
            t_start_cmd, t_back = start_postgres(stack)
            # Answers to requests made entirely while PostgreSQL was down.
            down = [r for r in led.window(t_down, t_start_cmd) if r.t1 <= t_start_cmd]
            down_answers += down
            ack = first_ack_after(led, t_back, "PostgreSQL being back")
            recoveries.append(ack - t_back)
            print(f"outage {outages}: down {t_start_cmd - t_down:.1f} s, "
                  f"200 again {recoveries[-1] * 1000:.0f} ms after PostgreSQL accepted connections")
            if not LONG:
                break
            sleep_until(cycle + period)
    finally:
        stack_cmd(stack, "pg-start")
    rep = finish_load(led, seconds)
    assert_promise_kept(rep)
    failures_are_503(rep)
    assert down_answers, "no request completed while PostgreSQL was down"
    for r in down_answers:
        assert r.status == 503 and r.retry_after, (r.label, r.retry_after)
    assert max(recoveries) <= 2.0
    record("PostgreSQL restart", rep,
           f"{outages} x pg-stop (fast), {down_for:.0f} s down, pg-start",
           f"200 again max {max(recoveries) * 1000:.0f} ms after PostgreSQL is back",
           f"{len(down_answers)} answers while down, all 503 + Retry-After")


def test_pool_starts_while_postgres_is_down_under_load(stack):
    """A pool that never reached PostgreSQL cannot tell real tokens from wrong
    ones: it must answer 503 (never 404, never 200) until PostgreSQL is there,
    then heal within 2 s."""
    ep = ready_endpoint(stack, "cold")
    seconds = load_seconds(5)
    period = 15.0
    led, down, recoveries, cycles = None, [], [], 0
    try:
        while True:
            cycle = time.monotonic()
            stack_cmd(stack, "pool-stop")
            stack_cmd(stack, "pg-stop")
            stack_cmd(stack, "pool-start")
            t_pool = time.monotonic()
            if led is None:
                # Stopped below, once the last cycle has healed.
                led = ledger_for(stack, ep, seconds + 60).start()
            cycles += 1
            time.sleep(2.0)
            t_start_cmd, t_back = start_postgres(stack)
            ack = first_ack_after(led, t_back, "PostgreSQL being back")
            recoveries.append(ack - t_back)
            down += [r for r in led.window(t_pool, t_start_cmd) if r.t1 <= t_start_cmd]
            if not LONG or time.monotonic() - led.t_start > seconds - period:
                break
            sleep_until(cycle + period)
        time.sleep(1.5)  # some load on the healed pool
    finally:
        stack_cmd(stack, "pg-start")
        stack_cmd(stack, "pool-start")
        if led is not None:
            led.stop()
    rep = led.finish()
    print(f"{len(down)} answers before PostgreSQL started; 200 again max "
          f"{max(recoveries) * 1000:.0f} ms after it was back")
    assert_promise_kept(rep)
    failures_are_503(rep)
    assert down and all(r.status == 503 and r.retry_after for r in down), \
        {r.label for r in down}
    assert max(recoveries) <= 2.0
    record("pool started without PostgreSQL", rep,
           f"{cycles} x (pool started while PostgreSQL is down, 2 s later pg-start)",
           f"200 again max {max(recoveries) * 1000:.0f} ms after PostgreSQL is back",
           f"{len(down)} answers before, all 503 (never 404)")


@pytest.fixture
def short_timeouts_pool(stack):
    """The pool restarted with short bounded waits, and restored afterwards."""
    if LONG:
        yield {"commit_timeout_ms": 5000, "request_timeout_ms": 10000}  # the defaults
        return
    timeouts = {"commit_timeout_ms": 1000, "request_timeout_ms": 2000}
    with pool_with(stack, IPAYOUT_COMMIT_TIMEOUT_MS=str(timeouts["commit_timeout_ms"]),
                   IPAYOUT_REQUEST_TIMEOUT_MS=str(timeouts["request_timeout_ms"])):
        yield timeouts


def test_slow_postgres_bounded_waits(stack, short_timeouts_pool):
    """PostgreSQL that does not finish: first the events table locked by another
    session (lock_timeout), then every insert taking longer than
    statement_timeout. Requests wait at most request_timeout_ms and get 503;
    the pool's thread count does not grow; other requests (404 for an unknown
    token) stay fast; 200 again once the database is quick again."""
    t = short_timeouts_pool
    ep = ready_endpoint(stack, "slow")
    log = LogTail(stack)
    master = stack.pool_pid()
    pids = sorted(workers_of(master))
    threads_before = {p: thread_count(p) for p in pids}
    hold = 8.0 if LONG else 3.0
    seconds = load_seconds(2 * hold + 5)
    # Fewer senders than request threads, so that free threads remain for others.
    led = ledger_for(stack, ep, seconds + 120, senders=min(SENDERS, 6)).start()
    unknown = stack.base_url + "/ipayout/webhooks/" + "Z" * 43
    probes, thread_samples, windows, recoveries = [], [], [], []

    def during_fault(until):
        while time.monotonic() < until:
            t0 = time.monotonic()
            r = request(unknown, body=b"{}", headers={"Content-Type": "application/json"},
                        ca=stack.ca)
            probes.append((r.status, time.monotonic() - t0))
            thread_samples.append({p: thread_count(p) for p in pids})
            time.sleep(0.2)

    db = superuser(stack)
    try:
        cycles = 0
        while cycles == 0 or time.monotonic() - led.t_start < seconds - (2 * hold + 4):
            cycles += 1
            # 1. A session holds ACCESS EXCLUSIVE on the events table.
            locker = superuser(stack)
            locker.autocommit = False

            def lock():
                with locker.cursor() as cur:
                    cur.execute("LOCK TABLE ipayout.events IN ACCESS EXCLUSIVE MODE")

            def unlock():
                locker.rollback()
                locker.close()

            # 2. Every insert statement sleeps longer than statement_timeout.
            def slow_inserts():
                with db.cursor() as cur:
                    cur.execute(
                        "CREATE OR REPLACE FUNCTION public.ipayout_fault_slow() RETURNS trigger "
                        "LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(%s); RETURN NULL; END $$",
                        (t["commit_timeout_ms"] / 1000.0 + 1.0,))
                    cur.execute("CREATE TRIGGER ipayout_fault_slow BEFORE INSERT ON ipayout.events "
                                "FOR EACH STATEMENT EXECUTE FUNCTION public.ipayout_fault_slow()")

            def fast_inserts():
                with db.cursor() as cur:
                    cur.execute("DROP TRIGGER IF EXISTS ipayout_fault_slow ON ipayout.events")

            for inject, remove in ((lock, unlock), (slow_inserts, fast_inserts)):
                time.sleep(1.0)  # load without a fault first
                f = HeldFault(led, inject, remove, lambda: during_fault(time.monotonic() + hold))
                windows.append((f.start, f.removed))
                recoveries.append(f.recovery)
            if not LONG:
                break
    finally:
        with db.cursor() as cur:
            cur.execute("DROP TRIGGER IF EXISTS ipayout_fault_slow ON ipayout.events")
            cur.execute("DROP FUNCTION IF EXISTS public.ipayout_fault_slow()")
        db.close()
    rep = finish_load(led, seconds)
    in_fault = [r for a, b in windows for r in led.window(a, b)]
    worst = max(r.latency_ms for r in in_fault) / 1000.0
    bound = t["request_timeout_ms"] / 1000.0 + 1.5
    print(f"during faults: {len(in_fault)} requests, worst latency {worst:.2f} s "
          f"(bound {bound:.1f} s); 404 probes: max {max(p[1] for p in probes) * 1000:.0f} ms; "
          f"threads {threads_before} -> max {max(max(s.values()) for s in thread_samples)}; "
          f"200 again after {max(recoveries) * 1000:.0f} ms")
    assert_promise_kept(rep)
    failures_are_503(rep)
    assert any(r.status == 503 for r in in_fault), "the fault never produced a 503"
    assert worst <= bound
    assert all(s == 404 for s, _ in probes)
    assert max(d for _, d in probes) < 1.0
    for sample in thread_samples:
        assert sample == threads_before, (sample, threads_before)
    assert max(recoveries) <= 2.0
    # statement_timeout = lock_timeout = commit_timeout_ms: the lock wait ends as
    # 57014 (statement timeout) or 55P03 (lock timeout), whichever fires first.
    timed_out = "sqlstate=57014" in log.text() or "sqlstate=55P03" in log.text()
    assert timed_out, "no timeout logged by the writer"
    assert sorted(workers_of(master)) == pids, "a worker died"
    record("slow PostgreSQL", rep,
           f"{cycles} x (events table locked {hold:.0f} s; every insert sleeping "
           f"{t['commit_timeout_ms'] / 1000 + 1:.0f} s for {hold:.0f} s), "
           f"commit_timeout_ms={t['commit_timeout_ms']} request_timeout_ms={t['request_timeout_ms']}",
           f"200 again max {max(recoveries) * 1000:.0f} ms after release",
           f"worst wait {worst:.1f} s, 404s stay fast (max {max(p[1] for p in probes) * 1000:.0f} ms), "
           f"threads constant")


# ---------------------------------------------------------------- disk full

class TmpfsTablespace:
    """A real disk-full: the events table moved to a tablespace on a tmpfs with
    room for only ~100 more rows. PostgreSQL fails to extend the file:
    ERROR 53100 'No space left on device'."""

    name = "ipayout_fault_full"
    needle = "No space left on device"

    def __init__(self, db):
        self.db, self.dir, self.mounted, self.moved = db, None, False, False

    def inject(self):
        pw = pwd.getpwnam("postgres")
        with self.db.cursor() as cur:
            cur.execute("SELECT pg_table_size('ipayout.events')")
            size = cur.fetchone()[0]
        self.dir = tempfile.mkdtemp(prefix="ipayout-diskfull.", dir="/var/tmp")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o",
                            f"size={size + 64 * 1024},mode=0700,uid={pw.pw_uid},gid={pw.pw_gid}",
                            "tmpfs", self.dir], capture_output=True, text=True)
        if p.returncode != 0:
            os.rmdir(self.dir)
            pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
        self.mounted = True
        with self.db.cursor() as cur:
            cur.execute(f"CREATE TABLESPACE {self.name} LOCATION %s", (self.dir,))
            cur.execute(f"ALTER TABLE ipayout.events SET TABLESPACE {self.name}")
        self.moved = True

    def remove(self):
        with self.db.cursor() as cur:
            if self.moved:
                cur.execute("ALTER TABLE ipayout.events SET TABLESPACE pg_default")
                self.moved = False
            cur.execute(f"DROP TABLESPACE IF EXISTS {self.name}")
        if self.mounted:
            subprocess.run(["umount", self.dir], check=True)
            self.mounted = False
            os.rmdir(self.dir)


class FailingTrigger:
    """The same error as a full disk (SQLSTATE 53100 disk_full), raised by a
    trigger, for machines where tmpfs cannot be mounted."""

    needle = "injected disk full"

    def __init__(self, db):
        self.db = db

    def inject(self):
        with self.db.cursor() as cur:
            cur.execute(
                "CREATE OR REPLACE FUNCTION public.ipayout_fault_disk_full() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected disk full (test_faults)' "
                "USING ERRCODE = 'disk_full'; END $$")
            cur.execute("CREATE TRIGGER ipayout_fault_disk_full BEFORE INSERT ON ipayout.events "
                        "FOR EACH STATEMENT EXECUTE FUNCTION public.ipayout_fault_disk_full()")

    def remove(self):
        with self.db.cursor() as cur:
            cur.execute("DROP TRIGGER IF EXISTS ipayout_fault_disk_full ON ipayout.events")
            cur.execute("DROP FUNCTION IF EXISTS public.ipayout_fault_disk_full()")


@pytest.mark.parametrize("fault", [TmpfsTablespace, FailingTrigger], ids=["tmpfs", "trigger"])
def test_disk_full_under_load(stack, fault):
    """Inserts fail with disk_full: 503 + Retry-After (never a crash: the
    workers keep their pids), a log line naming the cause, 200 again once
    there is room."""
    ep = ready_endpoint(stack, "full")
    log = LogTail(stack)
    master = stack.pool_pid()
    pids = sorted(workers_of(master))
    hold = 5.0 if LONG else 2.5
    period = hold + 6.0
    seconds = load_seconds(hold + 4)
    led = ledger_for(stack, ep, seconds + 120).start()
    db = superuser(stack)
    windows, recoveries, cycles = [], [], 0
    try:
        while cycles == 0 or time.monotonic() - led.t_start < seconds - period:
            cycle = time.monotonic() + 1.0
            sleep_until(cycle)
            f = fault(db)
            held = HeldFault(led, f.inject, f.remove, lambda: time.sleep(hold))
            cycles += 1
            windows.append((held.start, held.end))
            recoveries.append(held.recovery)
            if not LONG:
                break
            sleep_until(cycle + period)
    finally:
        db.close()
    rep = finish_load(led, seconds)
    # Requests made entirely while the fault was in place.
    in_fault = [r for a, b in windows for r in led.window(a, b) if r.t1 <= b]
    print(f"during the fault: {len(in_fault)} requests: "
          f"{sorted({r.label for r in in_fault})}; 200 again after {max(recoveries) * 1000:.0f} ms")
    assert_promise_kept(rep)
    failures_are_503(rep)
    assert in_fault and any(r.status == 503 for r in in_fault)
    if fault is FailingTrigger:
        # No insert can succeed while the trigger is there: never a 200.
        assert all(r.status == 503 for r in in_fault), sorted({r.label for r in in_fault})
    text = log.text()
    line = next((l for l in text.splitlines() if "sqlstate=53100" in l), None)
    assert line and fault.needle in line and "level=error" in line, line
    assert sorted(workers_of(master)) == pids, "a worker died"
    crashed = "worker killed" in text or "worker exited" in text
    assert not crashed, "the pool replaced a worker"
    assert max(recoveries) <= 2.0
    name = "disk full (tmpfs tablespace)" if fault is TmpfsTablespace else "table unwritable (trigger, 53100)"
    record(name, rep, f"{cycles} x {hold:.1f} s " + (
        "events table on a full tmpfs" if fault is TmpfsTablespace else "BEFORE INSERT trigger raising disk_full"),
        f"200 again max {max(recoveries) * 1000:.0f} ms after room is back",
        "worker pids unchanged; log: sqlstate=53100")


# ---------------------------------------------------------------- nginx and pool

def test_nginx_reload_under_load(stack):
    """nginx -s reload, repeatedly, under load: not one failed request."""
    ep = ready_endpoint(stack, "reload")
    seconds = load_seconds(5)
    led = ledger_for(stack, ep, seconds + 120).start()
    reloads = 0
    time.sleep(0.5)
    while time.monotonic() - led.t_start < seconds - 1.0:
        t = time.monotonic()
        stack_cmd(stack, "nginx-reload")
        reloads += 1
        sleep_until(t + 1.0)
    rep = finish_load(led, seconds)
    assert_promise_kept(rep)
    assert reloads >= 3
    assert rep["not_acknowledged_during_load"] == 0, rep["by_status"]
    record("nginx reload", rep, f"{reloads} x nginx -s reload (every ~1 s)", "none needed",
           "0 failed requests")


def test_pool_sighup_reload_under_load(stack):
    """SIGHUP (systemd's ExecReload) to the master, every 0.2 s, under load: the
    workers reload their settings and not one request fails."""
    ep = ready_endpoint(stack, "hup")
    log = LogTail(stack)
    master = stack.pool_pid()
    pids = sorted(workers_of(master))
    seconds = load_seconds(4)
    led = ledger_for(stack, ep, seconds + 120).start()
    hups = 0
    time.sleep(0.3)
    while time.monotonic() - led.t_start < seconds - 0.5:
        os.kill(master, signal.SIGHUP)
        hups += 1
        time.sleep(0.2)
    rep = finish_load(led, seconds)
    assert_promise_kept(rep)
    assert rep["not_acknowledged_during_load"] == 0, rep["by_status"]
    assert sorted(workers_of(master)) == pids, "a worker was replaced"
    reloaded = log.text().count("settings reloaded")
    assert reloaded > 0, "no reload logged"
    record("pool SIGHUP reload", rep, f"{hups} x SIGHUP to the master (every 0.2 s)", "none needed",
           f"0 failed requests; {reloaded} \"settings reloaded\" lines (master and workers)")


def test_sigterm_drain_is_bounded_with_an_idle_fastcgi_connection(stack):
    """SIGTERM must end the pool within a few seconds even when a FastCGI
    connection was accepted but has not sent its request yet (nginx sends at
    once, but under load a drain meets such a connection now and then: 1 drain
    in ~30 hung for 15 s in the long run). Here the connection is made idle on
    purpose, so the case is deterministic."""
    sock_path = stack.info["FCGI_SOCKET"]
    master = stack.pool_pid()
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(sock_path)
    stuck = {}
    try:
        time.sleep(0.3)  # a worker thread accepts it and waits for its first record
        t0 = time.monotonic()
        os.kill(master, signal.SIGTERM)
        while time.monotonic() - t0 < 5 and process_alive(master):
            time.sleep(0.02)
        took = time.monotonic() - t0
        if process_alive(master):
            for w in workers_of(master):
                stuck[w] = sorted(thread_states(w))
            print(f"pool still running {took:.1f} s after SIGTERM; worker threads: {stuck}")
            os.killpg(master, signal.SIGKILL)
        else:
            print(f"pool exited {took:.2f} s after SIGTERM")
    finally:
        idle.close()
        stack_cmd(stack, "pool-start")
    assert not stuck, f"the pool did not exit within 5 s of SIGTERM (thread states {stuck})"


@pytest.mark.skipif(not LONG, reason="CI: test_resilience.py::test_sigterm_under_load_loses_no_acknowledged_event")
def test_pool_sigterm_restart_under_load(stack):
    """The pool drained with SIGTERM (scripts/stack pool-stop) and started again,
    repeatedly: in-flight requests finish, nginx answers 503 while no pool
    listens, nothing acknowledged is lost."""
    ep = ready_endpoint(stack, "term")
    log = LogTail(stack)
    seconds = load_seconds(10)
    period = 10.0
    led = ledger_for(stack, ep, seconds + 120).start()
    downtimes, drains, restarts = [], [], 0
    try:
        while time.monotonic() - led.t_start < seconds - period:
            cycle = time.monotonic()
            time.sleep(2.0)
            t_term = time.monotonic()
            stack_cmd(stack, "pool-stop")
            t_stopped = time.monotonic()
            stack_cmd(stack, "pool-start")
            t_started = time.monotonic()
            restarts += 1
            ack = first_ack_after(led, t_started, "pool-start")
            downtimes.append(ack - t_term)
            drains.append(t_stopped - t_term)
            print(f"restart {restarts}: drain {t_stopped - t_term:.2f} s, start "
                  f"{t_started - t_stopped:.2f} s, 200 again {ack - t_term:.2f} s after SIGTERM")
            sleep_until(cycle + period)
    finally:
        stack_cmd(stack, "pool-start")
    rep = finish_load(led, seconds)
    assert_promise_kept(rep)
    failures_are_503(rep)
    stopped = log.text().count("pool stopped")
    hung = sum(d > 5 for d in drains)
    record("pool SIGTERM + restart", rep, f"{restarts} x SIGTERM drain (pool-stop) + pool-start",
           f"200 again max {max(downtimes) * 1000:.0f} ms after SIGTERM",
           f"failures: nginx 503 while no pool listens; drains: max {max(drains):.1f} s, "
           f"{hung} hung until scripts/stack's SIGKILL at 15 s")
    assert restarts >= 1
    assert stopped == restarts, f"{stopped} drains logged for {restarts} SIGTERMs"
    assert hung == 0, f"{hung} of {restarts} drains did not end within 5 s"
