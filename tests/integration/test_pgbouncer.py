"""The worker pool writing through a real PgBouncer in transaction pool mode:
what a fleet of receiver hosts in front of one PostgreSQL would use
(docs/scaling.md).

The test starts its own PgBouncer on loopback (a port derived from the stack's
PostgreSQL port) and its own pool pointed at it, and speaks FastCGI to the pool
with libfcgi's cgi-fcgi, setting the parameters nginx's snippet sets. Transaction
pooling hands every transaction to whichever server connection is free, so the
writer must keep no session state it relies on: its timeouts are SET LOCAL per
transaction. default_pool_size = 1 makes both writers share one server
connection, which is the point of the exercise."""
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from conftest import count_events
from webhook import BIN, create_endpoint, fcgi, sign, stop_process

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


# ---------------------------------------------------------------- FastCGI

def post_signed(sock, ep, body: bytes):
    """A delivery as i-payout makes it, signed over the endpoint's notification URL."""
    ts = str(int(time.time()))
    return fcgi(sock, "POST", urllib.parse.urlsplit(ep.url).path, body,
                {"HTTP_X_TIMESTAMP": ts, "HTTP_X_SIGNATURE": sign(ep.key, ts, ep.url, body)})


def event_body(event="PAYMENT.STATUS.UPDATED"):
    return json.dumps({"event": event, "eventId": str(uuid.uuid4()),
                       "data": {"amount": "12.50", "currency": "USD"}}).encode()


def wait_for(predicate, timeout, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


# ---------------------------------------------------------------- PgBouncer

def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Bouncer:
    """A throwaway PgBouncer: trust authentication on loopback only, like the test
    stack's PostgreSQL it sits in front of."""

    def __init__(self, pg_port, port, workdir: Path):
        self.pg_port, self.port, self.dir = pg_port, port, workdir
        self.proc = None
        self.log = workdir / "pgbouncer.log"
        (workdir / "userlist.txt").write_text('"ipayout_webhookd" ""\n"postgres" ""\n')
        (workdir / "pgbouncer.ini").write_text(f"""\
[databases]
ipayout = host=127.0.0.1 port={pg_port} dbname=ipayout

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 1
max_client_conn = 50
logfile = {self.log}
pidfile = {workdir}/pgbouncer.pid
; After KILL, logins wait for a fresh server connection, and PgBouncer opens
; one only server_login_retry (default 15 s) after the last one was dropped.
server_login_retry = 1
""")
        # PgBouncer refuses to run as root.
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            pw = pwd.getpwnam(self.user)
            for p in (workdir, *workdir.iterdir()):
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def start(self):
        cmd = [PGBOUNCER, str(self.dir / "pgbouncer.ini")]
        if self.user:
            cmd = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups",
                   *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd="/")
        if not wait_for(lambda: self.proc.poll() is not None or self._answers(), 10):
            raise AssertionError(f"pgbouncer did not start:\n{self.log_text()}")
        assert self.proc.poll() is None, f"pgbouncer exited:\n{self.log_text()}"

    def stop(self, sig=signal.SIGTERM):
        """SIGTERM: immediate shutdown, every connection dropped."""
        if self.proc:
            stop_process(self.proc, sig, timeout=10)

    def _answers(self):
        try:
            self.admin("SHOW VERSION")
            return True
        except AssertionError:
            return False

    def admin(self, command):
        """A command on the admin console; rows as lists of strings."""
        p = subprocess.run(["psql", "-X", "-At", "-F", "\t", "-h", "127.0.0.1", "-p",
                            str(self.port), "-U", "postgres", "-c", command, "pgbouncer"],
                           capture_output=True, text=True, timeout=10,
                           env=dict(os.environ, PGCONNECT_TIMEOUT="3"))
        if p.returncode != 0:
            raise AssertionError(f"pgbouncer admin {command!r}: {p.stderr.strip()}")
        return [line.split("\t") for line in p.stdout.splitlines()]

    def admin_dicts(self, command):
        """SHOW output as dicts: -A drops the header with -t, so ask for it."""
        p = subprocess.run(["psql", "-X", "-A", "-F", "\t", "-P", "footer=off", "-h",
                            "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
                            command, "pgbouncer"],
                           capture_output=True, text=True, timeout=10,
                           env=dict(os.environ, PGCONNECT_TIMEOUT="3"))
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        names = lines[0].split("\t")
        return [dict(zip(names, line.split("\t"))) for line in lines[1:]]

    def writer_servers(self):
        """Backend pids of PgBouncer's server connections for the writers' role."""
        return {s["remote_pid"] for s in self.admin_dicts("SHOW SERVERS")
                if s["database"] == "ipayout" and s["user"] == "ipayout_webhookd"}

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"


@pytest.fixture
def bouncer(stack):
    if not Path(PGBOUNCER).exists():
        pytest.skip("pgbouncer is not installed (scripts/lib.sh installs it)")
    pg_port = int(stack.env["IPAYOUT_PG_PORT"])
    workdir = Path(tempfile.mkdtemp(prefix="ipayout-pgbouncer."))  # postgres must reach it
    b = None
    try:
        # The stack's PostgreSQL port + 3, or the next free one: each engineer's
        # stack has its own PostgreSQL port, so each gets its own PgBouncer port.
        # A port can also be taken in between by a client socket of someone's
        # load test (these ports are in the ephemeral range): then the next one.
        errors = []
        for port in (p for p in range(pg_port + 3, pg_port + 40) if port_free(p)):
            b = Bouncer(pg_port, port, workdir)
            try:
                b.start()
                break
            except AssertionError as e:
                b.stop()
                errors.append(str(e))
                b = None
                if len(errors) == 5:
                    break
        assert b, "pgbouncer did not start:\n" + "\n".join(errors)
        yield b
    finally:
        if b:
            b.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def pool(bouncer, tmp_path):
    """A worker pool of its own whose database is the PgBouncer, not PostgreSQL.
    connect_timeout: a paused PgBouncer holds new logins instead of refusing them."""
    sock = tmp_path / "pool.sock"
    log = open(tmp_path / "pool.log", "w+")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAYOUT_")}
    database = (f"postgresql://ipayout_webhookd@127.0.0.1:{bouncer.port}/ipayout"
                "?connect_timeout=2")
    proc = subprocess.Popen([str(BIN), "serve", f"--listen={sock}", f"--database={database}",
                             "--workers=2", "--threads=4", "--reconnect-ms=100",
                             "--request-timeout-ms=5000"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)

    class Pool:
        pass

    p = Pool()
    p.sock, p.proc = sock, proc
    p.log = lambda: Path(tmp_path / "pool.log").read_text(errors="replace")
    p.health = lambda: fcgi(sock, "GET", "/ipayout/health")
    try:
        assert wait_for(lambda: proc.poll() is None and p.health().status == 200, 15), p.log()
        yield p
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode == 0, p.log()


# ---------------------------------------------------------------- tests

def test_pool_stores_events_through_transaction_pooling(stack, db, bouncer, pool):
    ep = create_endpoint(stack, "pgb-" + uuid.uuid4().hex[:10])
    # The pool loaded its endpoints at connect time; a new one arrives within
    # endpoint_refresh_ms.
    first = event_body()
    assert wait_for(lambda: post_signed(pool.sock, ep, first).status == 200, 10), pool.log()
    again = post_signed(pool.sock, ep, first)
    assert again.status == 200 and again.json()["status"] == "duplicate", again

    bodies = [event_body() for _ in range(20)]
    answers = [post_signed(pool.sock, ep, b) for b in bodies]
    assert all(r.status == 200 and r.json()["status"] == "accepted" for r in answers), answers
    assert len({r.json()["id"] for r in answers}) == 20
    assert count_events(db, ep.name) == 21

    # Two writers (one per worker process), one server connection between them:
    # transaction pooling really is in the path.
    pools = [p for p in bouncer.admin_dicts("SHOW POOLS")
             if p["database"] == "ipayout" and p["user"] == "ipayout_webhookd"]
    assert len(pools) == 1, pools
    clients = int(pools[0]["cl_active"]) + int(pools[0]["cl_waiting"])
    servers = sum(int(pools[0][k]) for k in ("sv_active", "sv_idle", "sv_used", "sv_tested",
                                             "sv_login"))
    assert clients == 2 and servers <= 1, pools[0]

    # The writers SET LOCAL their timeouts in each transaction: another client
    # handed the same server connection finds the server's defaults, not the
    # writers' 5 s (a session-level SET would have stayed behind).
    [server_pid] = bouncer.writer_servers()
    p = subprocess.run(["psql", "-X", "-At", "-F", " ", "-c",
                        "SELECT pg_backend_pid(), current_setting('statement_timeout'), "
                        "current_setting('lock_timeout')",
                        f"postgresql://ipayout_webhookd@127.0.0.1:{bouncer.port}/ipayout"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [server_pid, "0", "0"], p.stdout
    assert "batch insert failed" not in pool.log()


def test_writer_survives_server_connections_being_recycled(stack, db, bouncer, pool):
    ep = create_endpoint(stack, "pgb-" + uuid.uuid4().hex[:10])
    assert wait_for(lambda: post_signed(pool.sock, ep, event_body()).status == 200, 10)
    stored = 1

    # RECONNECT: PgBouncer closes each server connection once it is released
    # and opens new ones. Invisible to the pool: every delivery still gets 200.
    before = bouncer.writer_servers()
    assert before
    bouncer.admin("RECONNECT ipayout")
    for _ in range(10):
        r = post_signed(pool.sock, ep, event_body())
        assert r.status == 200, r
        stored += 1
    assert wait_for(lambda: bouncer.writer_servers().isdisjoint(before), 5), \
        (before, bouncer.writer_servers())

    # The server side goes away under PgBouncer (a PostgreSQL restart or an
    # administrator's pg_terminate_backend): at most one delivery sees 503, the
    # next ones are stored again.
    victims = bouncer.writer_servers()
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM unnest(%s::int[]) AS p(pid) "
                    "WHERE pg_terminate_backend(pid)", ([int(v) for v in victims],))
        assert cur.fetchone()[0] == len(victims)
    statuses = []
    for _ in range(5):
        r = post_signed(pool.sock, ep, event_body())
        statuses.append(r.status)
    assert statuses.count(503) <= 1 and statuses[-1] == 200, statuses
    stored += statuses.count(200)
    assert count_events(db, ep.name) == stored


def test_pgbouncer_outage_answers_503_then_recovers(stack, db, bouncer, pool):
    ep = create_endpoint(stack, "pgb-" + uuid.uuid4().hex[:10])
    assert wait_for(lambda: post_signed(pool.sock, ep, event_body()).status == 200, 10)

    bouncer.stop()  # SIGTERM: immediate shutdown, the writers' connections drop
    body = event_body()
    r = post_signed(pool.sock, ep, body)
    assert r.status == 503, r
    assert r.json()["error"] == "unavailable" and int(r.headers["retry-after"]) > 0, r
    assert wait_for(lambda: pool.health().status == 503, 5)

    bouncer.start()
    # i-payout retries the same delivery: stored once, whatever the first try did.
    assert wait_for(lambda: post_signed(pool.sock, ep, body).status == 200, 15), pool.log()
    assert post_signed(pool.sock, ep, body).json()["status"] == "duplicate"
    assert pool.health().status == 200
    assert count_events(db, ep.name) == 2


def test_kill_and_resume_on_the_admin_console(stack, db, bouncer, pool):
    ep = create_endpoint(stack, "pgb-" + uuid.uuid4().hex[:10])
    assert wait_for(lambda: post_signed(pool.sock, ep, event_body()).status == 200, 10)

    # KILL drops every client and server connection of the database and holds
    # new logins until RESUME: the writers cannot get back in (connect_timeout).
    bouncer.admin("KILL ipayout")
    body = event_body()
    r = post_signed(pool.sock, ep, body)
    assert r.status == 503, r
    bouncer.admin("RESUME ipayout")
    assert wait_for(lambda: post_signed(pool.sock, ep, body).status == 200, 10), pool.log()
    assert count_events(db, ep.name) == 2
