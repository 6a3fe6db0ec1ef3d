#!/usr/bin/python3
# (Debian's python3 explicitly: psycopg2.)
"""The scenarios of scripts/ha, against the Patroni cluster and the two stacks
that script started. Run by scripts/ha, not by hand: it needs the cluster's
directory, the stacks' `scripts/stack start` output and the nodes' ports.

Each scenario sends signed events from 8 senders through nginx with the
acknowledgement ledger (bench/ledger.py) to an endpoint of its own, injects
one fault a quarter into the load (at least 5 s in), keeps the load going
until SECONDS have passed and at least 5 s after it recovered, lets the ledger
redeliver what got no 2xx, and checks the table. Two consumers read the whole
time: `ipayout-events tail --follow --consumer ha-cli` and an SQL poll/ack loop
(consumer ha-sql), both on the multi-host conninfo. Per scenario:

  acknowledged  events answered 2xx (accepted or duplicate), and how many per
                second during the load
  lost          acknowledged but not in ipayout.events after the run
  duplicated    events stored more than once
  non2xx        the longest stretch of answers (in completion order) without
                a 2xx: seconds from its first answer to the next 2xx, and count
  recovery      seconds from the fault to the 2xx that ended the longest
                non-2xx stretch after it (or to the first 2xx after the fault)
  missed        stored events a consumer never read (cli/sql)
  repeated      events a consumer read again after its ack committed (cli: any
                line printed twice, since the CLI acks what it printed)
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ledger import Ledger  # noqa: E402
from webhook import EVENTS_BIN, Stack, create_endpoint, process_alive  # noqa: E402  (ledger put it on the path)

RATE = 300.0      # events/s over all senders: the machine is shared, the point is faults
SENDERS = 8


def log(msg):
    print(f"ha: {msg}", file=sys.stderr, flush=True)


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


# ---------------------------------------------------------------- the cluster

class Node:
    def __init__(self, state, name, pg_port, api_port):
        self.name, self.pg_port, self.api_port = name, int(pg_port), int(api_port)
        self.dir = Path(state) / name
        self.yml = self.dir / "patroni.yml"
        self.log_path = self.dir / "patroni.log"

    def pid(self, path, line=0):
        try:
            return int(Path(path).read_text().split("\n")[line].strip())
        except (OSError, ValueError, IndexError):
            return None

    def kill_host(self):
        """What losing the machine does: Patroni and every PostgreSQL process
        die at once (SIGKILL). Patroni alone would be restarted by nobody;
        the postmaster alone would be restarted in place by Patroni."""
        patroni = self.pid(self.dir / "patroni.pid")
        postmaster = self.pid(self.dir / "data" / "postmaster.pid")
        victims = [p for p in [patroni, postmaster] if p and process_alive(p)]
        if postmaster:
            victims += children(postmaster)
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return victims

    def start(self):
        with open(self.log_path, "ab") as out:
            subprocess.Popen(["setsid", "runuser", "-u", "postgres", "--", "/bin/sh", "-c",
                              'echo "$$" >"$0" && exec "$@"', str(self.dir / "patroni.pid"),
                              "patroni", str(self.yml)],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/")


class Cluster:
    def __init__(self, state, spec):
        self.nodes = {}
        for item in filter(None, spec.split(",")):
            name, pg, api = item.split(":")
            self.nodes[name] = Node(state, name, pg, api)
        self.hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes.values())
        self.admin_url = (f"postgresql://postgres@{self.hosts}/ipayout"
                          "?target_session_attrs=read-write&connect_timeout=2")
        self.ctl_conf = str(next(iter(self.nodes.values())).yml)

    def ctl(self, *args, timeout=60):
        return subprocess.run(["runuser", "-u", "postgres", "--", "patronictl", "-c",
                               self.ctl_conf, *args], capture_output=True, text=True,
                              timeout=timeout, cwd="/")

    def members(self):
        p = self.ctl("list", "-f", "json")
        try:
            return json.loads(p.stdout) if p.returncode == 0 else []
        except ValueError:
            return []

    def role(self, role):
        for m in self.members():
            if m.get("Role") == role:
                return m["Member"]
        return None

    def healthy(self, nodes, sync=True):
        ms = self.members()
        ok = [m for m in ms if m.get("State") in ("running", "streaming")]
        roles = [m.get("Role") for m in ok]
        return len(ok) == nodes and "Leader" in roles and (not sync or "Sync Standby" in roles) \
            and all(m.get("Lag in MB", 0) in (0, "", None) for m in ok if m.get("Role") != "Leader")

    def wait_healthy(self, nodes, sync=True, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy(nodes, sync):
                return True
            time.sleep(0.5)
        log("cluster not healthy: " + self.ctl("list").stdout)
        return False

    def table(self):
        p = self.ctl("list")
        return (p.stdout + p.stderr).rstrip()


# ---------------------------------------------------------------- consumers

class SqlConsumer(threading.Thread):
    """poll -> ack -> COMMIT in one transaction, again and again; reconnects
    (to whichever node is writable) after any error. An event is 'acked' once
    the COMMIT of the ack that covered it returned."""

    def __init__(self, url, name="ha-sql"):
        super().__init__(daemon=True, name=name)
        self.url, self.cname = url, name
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.seen = {}        # (tag, eventId) -> times read
        self.acked = set()
        self.repeated = set()  # read again after its ack committed
        self.errors = 0

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = psycopg2.connect(self.url)
                with conn.cursor() as cur:
                    cur.execute("SELECT id, payload->>'ledger', payload->>'eventId' "
                                "FROM ipayout.poll(%s, 500)", (self.cname,))
                    rows = cur.fetchall()
                    with self.lock:
                        for _, tag, eid in rows:
                            k = (tag, eid)
                            self.seen[k] = self.seen.get(k, 0) + 1
                            if k in self.acked:
                                self.repeated.add(k)
                    if rows:
                        cur.execute("SELECT ipayout.ack(%s, %s)", (self.cname, rows[-1][0]))
                conn.commit()
                with self.lock:
                    self.acked.update((tag, eid) for _, tag, eid in rows)
                if len(rows) < 500:
                    self.stop.wait(0.05)
            except psycopg2.Error:
                self.errors += 1
                try:
                    if conn is not None:
                        conn.close()
                except psycopg2.Error:
                    pass
                conn = None
                self.stop.wait(0.25)
        if conn is not None:
            conn.close()

    def view(self):
        with self.lock:
            return dict(self.seen), set(self.repeated)


class CliConsumer(threading.Thread):
    """`ipayout-events tail --follow --consumer ha-cli` on the multi-host
    conninfo; reads its stdout. The CLI acks each batch once printed, so a line
    printed twice was read again after its ack."""

    def __init__(self, url, stderr_path, name="ha-cli"):
        super().__init__(daemon=True, name=name)
        self.err = open(stderr_path, "ab")
        self.proc = subprocess.Popen([str(EVENTS_BIN), "tail", "--follow", "--consumer", name,
                                      "--poll-interval", "0.5", "--database", url],
                                     stdout=subprocess.PIPE, stderr=self.err)
        self.lock = threading.Lock()
        self.seen = {}
        self.repeated = set()

    def run(self):
        for line in self.proc.stdout:
            try:
                p = json.loads(line).get("payload") or {}
            except ValueError:
                continue
            k = (p.get("ledger"), p.get("eventId"))
            with self.lock:
                self.seen[k] = self.seen.get(k, 0) + 1
                if self.seen[k] > 1:
                    self.repeated.add(k)

    def view(self):
        with self.lock:
            return dict(self.seen), set(self.repeated)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


# ---------------------------------------------------------------- load

class TwoHostLedger(Ledger):
    """Spreads deliveries over two receiver hosts (stack A and B, each its own
    nginx and pool) as a load balancer would; once `down` is set, everything
    goes to B, as a load balancer does once its health check fails."""

    def __init__(self, *a, other_port, **kw):
        super().__init__(*a, **kw)
        self.other_port = other_port
        self.down = False
        self.to_b = set()

    @staticmethod
    def via_a(eid):
        return hash(eid) % 2 == 0

    def target(self, eid, phase):
        if phase == "redeliver-b" or self.down or not self.via_a(eid):
            return self._u.hostname, self.other_port
        return self._u.hostname, self._u.port


def stretches(results):
    """Longest run of non-2xx answers in completion order: (seconds, count,
    t1 of the 2xx that ended it or None)."""
    best = (0.0, 0, None)
    start, n = None, 0
    for r in sorted(results, key=lambda r: r.t1):
        if r.acked:
            if n and (r.t1 - start) > best[0]:
                best = (r.t1 - start, n, r.t1)
            start, n = None, 0
        else:
            if start is None:
                start = r.t1
            n += 1
    if n:
        end = max(r.t1 for r in results)
        if end - start >= best[0]:
            best = (end - start, n, None)
    return best


def load_stack(env_path, state_dir):
    info = dict(line.split("=", 1) for line in Path(env_path).read_text().splitlines()
                if "=" in line)
    from urllib.parse import urlsplit
    s = Stack(state_dir, 0, urlsplit(info["BASE_URL"]).port)
    s.info = info
    return s


class Harness:
    def __init__(self, args):
        self.args = args
        self.cluster = Cluster(args.state, args.nodes)
        self.a = load_stack(args.stack_a, args.stack_a_dir)
        self.b = load_stack(args.stack_b, args.stack_b_dir)
        self.lines = []
        self.failed = False

    # -- consumers

    def start_consumers(self):
        url = self.a.info["CONSUMER_DATABASE_URL"]
        conn = psycopg2.connect(self.cluster.admin_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in ("ha-cli", "ha-sql"):
                cur.execute("SELECT ipayout.subscribe(%s, 'end')", (name,))
        conn.close()
        self.sql = SqlConsumer(url)
        self.sql.start()
        self.cli = CliConsumer(url, Path(self.args.state) / "ha-cli.stderr")
        self.cli.start()

    def stop_consumers(self):
        self.sql.stop.set()
        self.sql.join(10)
        self.cli.close()
        self.cli.join(10)

    def consumer_counts(self, tag, stored, seconds=60):
        """Waits (bounded) until both consumers read every stored event of this
        scenario; returns missed and repeated per consumer, and events read
        that are not stored (an asynchronous failover's vanished rows)."""
        want = {(tag, e) for e in stored}
        deadline = time.monotonic() + seconds
        while True:
            views = {"cli": self.cli.view(), "sql": self.sql.view()}
            missed = {k: len(want - {s for s in v[0] if s[0] == tag}) for k, v in views.items()}
            if not any(missed.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        repeated = {k: len({r for r in v[1] if r[0] == tag}) for k, v in views.items()}
        vanished = {k: len({s for s in v[0] if s[0] == tag} - want) for k, v in views.items()}
        return missed, repeated, vanished

    # -- checks

    def txids_ahead(self):
        """On the node that is primary now: the next transaction id is above
        every stored event's txid, which the feed's rule (read below the
        snapshot xmin) needs after a promotion."""
        for _ in range(20):
            try:
                conn = psycopg2.connect(self.cluster.admin_url)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_current_xact_id() > coalesce(max(txid), '0') "
                                    "FROM ipayout.events")
                        ok = cur.fetchone()[0]
                    conn.rollback()
                    return ok
                finally:
                    conn.close()
            except psycopg2.Error:
                time.sleep(0.5)
        return False

    def ids_reused(self, led, stored):
        """Lost events whose id now belongs to another stored event: the new
        primary handed the id out again (its sequence had not seen it)."""
        with led._lock:
            ids = {r.id for r in led.results if r.acked and r.eid not in stored and r.id}
        conn = psycopg2.connect(self.cluster.admin_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM ipayout.events WHERE id = ANY(%s)",
                            (sorted(ids),))
                return cur.fetchone()[0]
        finally:
            conn.close()

    # -- one scenario

    def scenario(self, name, fault, sync=True, ledger_cls=Ledger, ledger_kw=None, after=None):
        seconds = self.args.seconds
        ep = create_endpoint(self.a, "ha-" + name + "-" + uuid.uuid4().hex[:6])
        led = ledger_cls(ep.url, ep.key, self.cluster.admin_url, ca=self.a.ca, senders=SENDERS,
                         duration=seconds + 70, rate=self.args.rate, timeout=15,
                         **(ledger_kw or {}))
        log(f"{name}: load from {SENDERS} senders at {self.args.rate:.0f} ev/s")
        led.start()
        fault_at = max(5.0, seconds / 4)
        time.sleep(fault_at)
        t_fault = time.monotonic()
        note = fault(led) or ""
        log(f"{name}: fault done after {time.monotonic() - t_fault:.1f} s {note}")
        # Load on until SECONDS and at least 5 s of 2xx answers after the fault.
        while True:
            now = time.monotonic()
            recent = led.window(now - 5.0)
            done = now - led.t_start >= seconds and recent and \
                all(r.acked for r in recent if r.t1 is not None and r.phase == "load") and \
                now - t_fault >= 5.0
            if done or now - led.t_start >= seconds + 60:
                break
            time.sleep(0.5)
        extra = after(led) if after else ""
        rep = led.finish()
        load = [r for r in led.results if r.phase == "load"]
        dur, count, _ = stretches(load)
        after_fault = [r for r in load if r.t1 >= t_fault]
        s_dur, s_n, s_end = stretches(after_fault)
        if s_n and s_end is not None:
            recovery = s_end - t_fault
        else:
            firsts = [r.t1 for r in after_fault if r.acked and r.t0 >= t_fault]
            recovery = (min(firsts) - t_fault) if firsts else float("nan")
        stored = {eid for (eid, tag), _ in led.stored().items() if tag == led.tag}
        missed, repeated, vanished = self.consumer_counts(led.tag, stored)
        ahead = self.txids_ahead()
        kind = "sync" if sync else "async"
        line = (f"{name} ({kind}): acknowledged={rep['acknowledged']} "
                f"({rep['events_per_s']:.0f}/s) lost={rep['lost']} "
                f"duplicated={rep['duplicated']} non2xx_longest={dur:.1f}s/{count} "
                f"fault_to_200={recovery:.1f}s missed=cli:{missed['cli']},sql:{missed['sql']} "
                f"repeated=cli:{repeated['cli']},sql:{repeated['sql']} "
                f"unresolved={rep['unresolved']} failed_then_stored={rep['failed_then_stored']} "
                f"txids_ahead={'yes' if ahead else 'NO'}")
        if not sync and any(vanished.values()):
            line += f" read_then_vanished=cli:{vanished['cli']},sql:{vanished['sql']}"
        if not sync and rep["lost"]:
            line += f" lost_ids_reused={self.ids_reused(led, stored)}"
        if extra:
            line += " " + extra
        if note:
            line += " " + note
        bad = rep["lost"] or rep["duplicated"] or any(missed.values()) or \
            any(repeated.values()) or rep["unresolved"] or rep["id_mismatch"] or \
            rep["double_accepted"] or rep["unexpected"] or not ahead or "FAIL" in line
        if sync and bad:
            self.failed = True
            line += "  <-- FAILED"
        log(line)
        log("by status: " + ", ".join(f"{k}: {v}" for k, v in rep["by_status"].items()))
        self.lines.append(line)
        return rep

    # -- the faults

    def switchover(self, led):
        leader, cand = self.cluster.role("Leader"), self.cluster.role("Sync Standby")
        p = self.cluster.ctl("switchover", "--leader", leader, "--candidate", cand, "--force")
        if p.returncode != 0:
            return f"switchover FAIL: {p.stdout.strip()} {p.stderr.strip()}"
        return f"[{leader}->{cand}]"

    def failover(self, led):
        leader = self.cluster.role("Leader")
        self.killed = self.cluster.nodes[leader]
        victims = self.killed.kill_host()
        return f"[killed {leader}: {len(victims)} processes]"

    def failover_lagging(self, led):
        """The replicas fall behind, then the primary's host dies: the
        primary's WAL senders are stopped (SIGSTOP) for --lag seconds, the way
        a slow network holds WAL back, then the leader's host is killed.
        (Stopping the replicas' WAL receivers instead would not do: on
        loopback the WAL waits in their socket buffers and survives the
        primary.) Synchronous: no commit can return meanwhile. Asynchronous:
        what the primary acknowledged in those seconds exists nowhere else."""
        leader = self.cluster.role("Leader")
        node = self.cluster.nodes[leader]
        pm = node.pid(node.dir / "data" / "postmaster.pid")
        stopped = []
        for c in children(pm) if pm else []:
            try:
                with open(f"/proc/{c}/cmdline", "rb") as f:
                    if b"walsender" in f.read():
                        os.kill(c, signal.SIGSTOP)
                        stopped.append(c)
            except OSError:
                pass
        time.sleep(self.args.lag)
        self.killed = node
        victims = node.kill_host()  # SIGKILL ends stopped processes too
        return (f"[{len(stopped)} WAL senders of {leader} stopped {self.args.lag:.1f} s, "
                f"then its host killed: {len(victims)} processes]")

    def restart_killed(self, sync=True):
        """The killed node back as a replica (not a measured scenario)."""
        self.killed.start()
        if not self.cluster.wait_healthy(len(self.cluster.nodes), sync=sync, timeout=120):
            raise RuntimeError(f"{self.killed.name} did not rejoin within 120 s")

    def rejoin(self, led):
        node = self.killed
        offset = node.log_path.stat().st_size
        t0 = time.monotonic()
        node.start()
        n = len(self.cluster.nodes)
        if not self.cluster.wait_healthy(n, timeout=120):
            return f"rejoin FAIL: {node.name} did not rejoin within 120 s"
        took = time.monotonic() - t0
        with open(node.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        how = "pg_rewind" if "pg_rewind" in text else \
            ("basebackup" if "basebackup" in text or "bootstrap from leader" in text else "restart")
        return f"[{node.name} streaming again after {took:.1f} s via {how}]"

    def kill_receiver(self, led):
        """Host A dies: its nginx and its whole pool, SIGKILL."""
        led.t_down = time.monotonic()
        led.down = True
        victims = []
        for pidfile in (Path(self.a.info["STATE_DIR"]) / "nginx" / "nginx.pid",
                        Path(self.a.info["WEBHOOKD_PID_FILE"])):
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            victims += [pid] + children(pid)
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return f"[receiver A killed: {len(victims)} processes]"

    def redeliver_to_b(self, led):
        """Every event host A acknowledged, delivered again to host B: each
        must be answered 200 duplicate."""
        with led._lock:
            acked_a = {r.eid for r in led.results if r.acked and r.phase == "load"
                       and r.t0 < led.t_down and led.via_a(r.eid)}
        sample = sorted(acked_a)
        outcomes = {}
        lock = threading.Lock()

        def redeliver(part):
            for eid in part:
                r = led.deliver(eid, led.bodies[eid], "redeliver-b")
                with lock:
                    outcomes[r.label] = outcomes.get(r.label, 0) + 1

        threads = [threading.Thread(target=redeliver, args=(sample[i::SENDERS],))
                   for i in range(SENDERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dup = outcomes.get("200 duplicate", 0)
        verdict = "" if dup == len(sample) and sample else " FAIL"
        return f"[redelivered {len(sample)} events acked by A to B: {dup} duplicate{verdict}]"

    def async_off(self):
        p = self.cluster.ctl("edit-config", "-s", "synchronous_mode=false", "--force")
        if p.returncode != 0:
            raise RuntimeError(f"patronictl edit-config: {p.stdout} {p.stderr}")
        # Patroni empties synchronous_standby_names on the leader in a loop or two.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.cluster.role("Sync Standby") is None and self.cluster.role("Leader"):
                try:
                    conn = psycopg2.connect(self.cluster.admin_url)
                    with conn.cursor() as cur:
                        cur.execute("SHOW synchronous_standby_names")
                        ssn = cur.fetchone()[0]
                    conn.close()
                    if ssn == "":
                        return
                except psycopg2.Error:
                    pass
            time.sleep(0.5)
        raise RuntimeError("synchronous replication still on 30 s after edit-config")

    def run(self):
        c = self.cluster
        n = len(c.nodes)
        self.start_consumers()
        try:
            self.scenario("switchover", self.switchover)
            c.wait_healthy(n)
            self.scenario("failover", self.failover)
            c.wait_healthy(n - 1)
            self.scenario("rejoin", self.rejoin)
            c.wait_healthy(n)
            self.scenario("two-receivers", self.kill_receiver, ledger_cls=TwoHostLedger,
                          ledger_kw={"other_port": int(self.b.info["BASE_URL"].rsplit(":", 1)[1])},
                          after=self.redeliver_to_b)
            # Host A back, for the endpoint check of the next scenario.
            subprocess.run([str(HERE.parent / "scripts" / "stack"), "start"], env=dict(
                os.environ, IPAYOUT_STATE_DIR=self.a.info["STATE_DIR"],
                IPAYOUT_HTTPS_PORT=self.a.info["BASE_URL"].rsplit(":", 1)[1],
                IPAYOUT_PG_HOSTS=c.hosts, IPAYOUT_WORKERS="2", IPAYOUT_THREADS="8"),
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            c.wait_healthy(n)
            self.scenario("failover-lagging", self.failover_lagging)
            self.restart_killed()
            self.async_off()
            c.wait_healthy(n, sync=False)
            self.scenario("failover", self.failover, sync=False)
            self.restart_killed(sync=False)
            self.scenario("failover-lagging", self.failover_lagging, sync=False)
        finally:
            self.stop_consumers()
        log("cluster at the end:\n" + c.table())
        print("ha: results (SECONDS=%d, %d senders, %.0f ev/s offered)" %
              (self.args.seconds, SENDERS, self.args.rate), flush=True)
        for line in self.lines:
            print("ha: " + line, flush=True)
        return 1 if self.failed else 0


def main():
    ap = argparse.ArgumentParser(description="scripts/ha's scenarios (run scripts/ha)")
    ap.add_argument("--seconds", type=int, required=True)
    ap.add_argument("--rate", type=float, default=RATE)
    ap.add_argument("--lag", type=float, default=1.0,
                    help="seconds the replicas fall behind in the failover-lagging scenarios")
    ap.add_argument("--state", required=True, help="the cluster's directory")
    ap.add_argument("--nodes", required=True, help="name:pg_port:api_port,...")
    ap.add_argument("--stack-a", required=True)
    ap.add_argument("--stack-b", required=True)
    ap.add_argument("--stack-a-dir", required=True)
    ap.add_argument("--stack-b-dir", required=True)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return Harness(args).run()


if __name__ == "__main__":
    sys.exit(main())
