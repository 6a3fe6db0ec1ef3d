#!/usr/bin/python3
"""The package end to end under a real systemd. Runs INSIDE the throw-away root
that scripts/system-test boots (systemd as PID 1 in its own namespaces, an
overlay of the machine's root on a tmpfs): it installs, starts, loads,
upgrades and purges for real, so it must never run on a machine's own root.

    system_test.py --new-deb NEW.deb --old-deb OLD.deb

Prints one "ok - ..." or "FAIL - ..." line per assertion and, last,
"RESULT <passed> <failed>" for the driver. Every wait is bounded.
"""
import argparse
import json
import os
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from ledger import Ledger, format_report  # noqa: E402
from webhook import request, sign  # noqa: E402

PACKAGE = "ipayout-webhook"
SERVICE = "ipayout-webhookd.service"
SOCKET_UNIT = "ipayout-webhookd.socket"
PURGE_SERVICE = "ipayout-events-purge.service"
PURGE_TIMER = "ipayout-events-purge.timer"
USER = "ipayout-webhook"
CONF = Path("/etc/ipayout-webhook/ipayout-webhookd.conf")
RUN_DIR = Path("/run/ipayout-webhook")
DROPIN_DIR = Path(f"/etc/systemd/system/{SERVICE}.d")
DROPIN = DROPIN_DIR / "system-test-private-users.conf"
TIMER_DROPIN = Path(f"/etc/systemd/system/{PURGE_TIMER}.d/system-test-now.conf")
SITE = Path("/etc/nginx/sites-available/ipayout-webhook")
CERT = Path("/etc/ssl/certs/ipayout-system-test.pem")
CERT_KEY = Path("/etc/ssl/private/ipayout-system-test.key")
BASE_URL = "https://localhost"   # the notification URL: nginx on port 443 of this namespace's loopback
OPERATOR = "http://127.0.0.1:9180"
# An address of this namespace only (on lo) that the unit's IPAddressAllow= does not cover.
FOREIGN_ADDR = "192.0.2.1"
ADMIN_PW = secrets.token_hex(12)
ADMIN_DSN = f"postgresql://system_test:{ADMIN_PW}@127.0.0.1:5432/ipayout"
READER_PW = secrets.token_hex(12)
READER_DSN = f"postgresql://billing:{READER_PW}@127.0.0.1:5432/ipayout"
PURGE_PW = secrets.token_hex(12)
# Endpoint keys: unique, so a search of the journal for one is meaningful.
KEY = "pk_systest_" + secrets.token_hex(10)
# Load stays below the example site's limit_req (50 r/s per client address).
LOAD_RATE = 35
ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive", SYSTEMD_COLORS="0", SYSTEMD_PAGER="",
           LC_ALL="C.UTF-8", PGCONNECT_TIMEOUT="5")

passed = 0
failed = 0


def say(msg=""):
    print(msg, flush=True)


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        say(f"ok - {name}")
    else:
        failed += 1
        say(f"FAIL - {name}" + (f"\n    {detail}".replace("\n", "\n    ") if detail else ""))
    return bool(cond)


class Abort(Exception):
    """A step everything after it depends on failed (already counted)."""


def need(name, cond, detail=""):
    if not check(name, cond, detail):
        raise Abort(name)


def sh(*cmd, check_rc=True, timeout=60, input=None, cwd="/", env=None):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       input=input, cwd=cwd, env=env or ENV)
    if check_rc and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n"
                             f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p


def wait_until(fn, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def show(unit, *props):
    p = sh("systemctl", "show", unit, *[f"--property={x}" for x in props])
    return dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)


def psql(sql, db="ipayout"):
    """As the postgres superuser over the local socket (peer authentication)."""
    return sh("runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
              "-d", db, "-c", sql).stdout.strip()


def admin():
    conn = psycopg2.connect(ADMIN_DSN, connect_timeout=5)
    conn.autocommit = True
    return conn


def query(sql, args=()):
    conn = admin()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def journal(*args):
    return sh("journalctl", "--no-pager", *args, timeout=30).stdout


def cursor():
    out = sh("journalctl", "--no-pager", "-n", "0", "--show-cursor", timeout=30).stdout
    m = re.search(r"-- cursor: (\S+)", out)
    return m.group(1) if m else None


def service_lines(after):
    """The service's journal lines after a cursor (MESSAGE only)."""
    return journal("-u", SERVICE, "-o", "cat", f"--after-cursor={after}").splitlines()


class Endpoint:
    def __init__(self, name, url, key):
        self.name, self.url, self.key = name, url, key
        self.token = url.rsplit("/", 1)[-1]

    def post(self, body, ts=None, signature=None, url=None):
        ts = str(int(time.time())) if ts is None else str(ts)
        headers = {"Content-Type": "application/json", "x-timestamp": ts,
                   "x-signature": signature or sign(self.key, ts, self.url, body)}
        return request(url or self.url, body=body, headers=headers, ca=str(CERT), timeout=20)


def add_endpoint(name, key=KEY):
    env = dict(ENV, IPAYOUT_KEY=key)
    p = sh("runuser", "-u", "postgres", "--", "/usr/bin/ipayout-webhookd", "endpoint", "add", name,
           f"--notification-url={BASE_URL}", "--policy=required", "--database=dbname=ipayout",
           env=env)
    ep = Endpoint(name, p.stdout.strip(), key)
    assert ep.url.startswith(BASE_URL + "/ipayout/webhooks/"), p.stdout
    return ep


def wait_endpoint_known(ep, timeout=15):
    """Workers pick endpoints up within endpoint_refresh_ms (1 s)."""
    def known():
        try:
            return ep.post(b"{}", signature="x").status == 401
        except OSError:
            return False
    ok = wait_until(known, timeout, 0.2)
    time.sleep(1.2)  # every worker, not just the one that answered
    return ok


def post_events(ep, n, marker):
    """n signed events through nginx; returns [(event id, stored id, status)]."""
    out = []
    for i in range(n):
        eid = str(uuid.uuid4())
        body = json.dumps({"event": "PAYMENT.COMPLETED", "eventId": eid, "seq": i,
                           "note": marker}).encode()
        r = ep.post(body)
        sid = r.json().get("id") if r.status == 200 else None
        out.append((eid, sid, r.status))
    return out


# ------------------------------------------------------------------ steps

def install(deb, how="apt"):
    if how == "apt":
        p = sh("apt-get", "install", "-y", "-q", "--no-install-recommends", deb, timeout=300)
    else:
        p = sh("dpkg", "-i", "--force-confold", deb, timeout=300)
    return p.stdout + p.stderr


def deb_version(deb):
    return sh("dpkg-deb", "-f", deb, "Version").stdout.strip()


def package_state():
    p = sh("dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE, check_rc=False)
    s = p.stdout.strip() if p.returncode == 0 else ""
    return None if s in ("", "not-installed") else s


def step_install(new_deb):
    say(f"# install {Path(new_deb).name} with apt-get (dependencies from the image)")
    install(new_deb)
    need("package installed", package_state() == "installed", package_state())
    user = sh("getent", "passwd", USER, check_rc=False).stdout.strip()
    check("postinst: system user created (sysusers)", user.endswith(":/nonexistent:/usr/sbin/nologin")
          and 0 < int(user.split(":")[2]) < 1000, user)
    st = os.stat(RUN_DIR) if RUN_DIR.exists() else None
    check("postinst: /run/ipayout-webhook 0750 ipayout-webhook:www-data (tmpfiles)",
          st is not None and oct(st.st_mode & 0o7777) == "0o750"
          and sh("stat", "-c", "%U:%G", RUN_DIR).stdout.strip() == f"{USER}:www-data")
    s = show(SOCKET_UNIT, "UnitFileState", "ActiveState", "SubState")
    check("postinst: socket enabled and listening", s == {"UnitFileState": "enabled",
                                                         "ActiveState": "active",
                                                         "SubState": "listening"}, s)
    s = show(SERVICE, "ActiveState")
    check("postinst: the service itself not started (socket activation)",
          s["ActiveState"] == "inactive", s)
    shipped = Path("/lib/systemd/system") / SERVICE
    check("the installed unit is the repository's systemd/ipayout-webhookd.service",
          shipped.read_bytes() == (ROOT / "systemd" / SERVICE).read_bytes())


OFFLINE_SCORE = []


def security_score(*args):
    p = sh("systemd-analyze", "security", *args, "--no-pager", check_rc=False, timeout=60)
    m = re.search(r"Overall exposure level for \S+: \d+\.\d+ \S+", p.stdout)
    return (m.group(0) if m else None), p


def step_private_users():
    """PrivateUsers= on this kind of machine: shown with a trivial unit, then
    turned off by a drop-in for this run only, if and only if it fails."""
    OFFLINE_SCORE.append(security_score("--offline=yes", f"/lib/systemd/system/{SERVICE}")[0])
    say("# PrivateUsers= on this machine (trivial proof with systemd-run)")
    with_pu = sh("systemd-run", "--wait", "--pipe", "--quiet", f"--property=User={USER}",
                 "--property=PrivateUsers=yes", "/bin/id", check_rc=False, timeout=30)
    without = sh("systemd-run", "--wait", "--pipe", "--quiet", f"--property=User={USER}",
                 "/bin/id", check_rc=False, timeout=30)
    say(f"  systemd-run --wait -p User={USER} -p PrivateUsers=yes /bin/id -> exit "
        f"{with_pu.returncode} {(with_pu.stdout + with_pu.stderr).strip()}")
    say(f"  systemd-run --wait -p User={USER} /bin/id -> exit {without.returncode} "
        f"{(without.stdout + without.stderr).strip()}")
    check("systemd-run without PrivateUsers= runs as the service user",
          without.returncode == 0 and f"({USER})" in without.stdout, without.stdout + without.stderr)
    caps = Path("/proc/self/status").read_text()
    capeff = int(re.search(r"^CapEff:\s*([0-9a-f]+)", caps, re.M).group(1), 16)
    say(f"  CAP_SYS_RESOURCE in this root's capability set: {bool(capeff & (1 << 24))}")
    # Why a systemd booted under chroot gets 217/USER: the kernel refuses a new
    # user namespace to a chrooted process (unshare(2): EPERM).
    demo = ("import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True)\n"
            "if sys.argv[1] == 'chroot': os.chroot('/usr')\n"
            "r = libc.unshare(0x10000000); print(r, os.strerror(ctypes.get_errno()) if r else 'ok')")
    for how in ("plain", "chroot"):
        d = sh("/usr/bin/python3", "-c", demo, how, check_rc=False)
        say(f"  unshare(CLONE_NEWUSER) {'after chroot(/usr)' if how == 'chroot' else 'here'}: "
            f"{(d.stdout + d.stderr).strip()}")
    if with_pu.returncode == 0:
        check("PrivateUsers=yes works in this root (booted with pivot_root, not chroot)",
              f"({USER})" in with_pu.stdout, with_pu.stdout)
        say("  so the unit runs exactly as shipped, with no drop-in")
        return False
    check("PrivateUsers=yes fails here with status=217/USER (the machine, not the unit)",
          with_pu.returncode == 217, with_pu.stdout + with_pu.stderr)
    DROPIN_DIR.mkdir(parents=True, exist_ok=True)
    DROPIN.write_text("# scripts/system-test: this machine's root lacks CAP_SYS_RESOURCE, so\n"
                      "# systemd cannot set up a user namespace (status=217/USER).\n"
                      "[Service]\nPrivateUsers=no\n")
    sh("systemctl", "daemon-reload")
    d = show(SERVICE, "DropInPaths", "PrivateUsers")
    check("drop-in with only PrivateUsers=no applied, the shipped unit unchanged",
          d["DropInPaths"] == str(DROPIN) and d["PrivateUsers"] == "no", d)
    say(f"  drop-in {DROPIN}: [Service] PrivateUsers=no")
    return True


def step_database():
    say("# PostgreSQL 15 (Debian's postgresql@15-main) and the schema")
    sh("systemctl", "start", "postgresql@15-main.service", timeout=90)
    need("postgresql@15-main active", show("postgresql@15-main.service", "ActiveState")
         ["ActiveState"] == "active")
    if psql("SELECT 1 FROM pg_database WHERE datname = 'ipayout'", db="postgres") != "1":
        psql("CREATE DATABASE ipayout", db="postgres")
    p = sh("runuser", "-u", "postgres", "--", "/usr/bin/ipayout-webhookd", "migrate",
           "--database=dbname=ipayout", check_rc=False, timeout=120)
    need("ipayout-webhookd migrate", p.returncode == 0, p.stdout + p.stderr)
    say("  " + (p.stdout + p.stderr).strip().replace("\n", "\n  "))
    psql(f"""DO $$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ipayout-webhook') THEN
        CREATE ROLE "ipayout-webhook" LOGIN IN ROLE ipayout_writer; END IF;
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'system_test') THEN
        CREATE ROLE system_test LOGIN SUPERUSER; END IF;
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing') THEN
        CREATE ROLE billing LOGIN IN ROLE ipayout_reader; END IF;
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ipayout_purge') THEN
        CREATE ROLE ipayout_purge LOGIN; END IF;
    END $$;
    ALTER ROLE system_test PASSWORD '{ADMIN_PW}';
    ALTER ROLE billing PASSWORD '{READER_PW}';
    ALTER ROLE ipayout_purge PASSWORD '{PURGE_PW}';""")


def grant_purge():
    """README: purge is for the schema owner or a role it grants EXECUTE to."""
    psql("GRANT USAGE ON SCHEMA ipayout TO ipayout_purge;"
         "GRANT EXECUTE ON FUNCTION ipayout.purge(interval, boolean, integer) TO ipayout_purge")


def step_nginx():
    say("# nginx: the example site with a self-signed certificate")
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
       "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
       "-keyout", CERT_KEY, "-out", CERT)
    os.chmod(CERT_KEY, 0o600)
    example = Path("/usr/share/doc/ipayout-webhook/examples/nginx-site.conf").read_text()
    # Only the host name and the certificate paths change.
    site = (example.replace("server_name hooks.example.com;", "server_name localhost;")
            .replace("/etc/letsencrypt/live/hooks.example.com/fullchain.pem", str(CERT))
            .replace("/etc/letsencrypt/live/hooks.example.com/privkey.pem", str(CERT_KEY)))
    SITE.write_text(site)
    link = Path("/etc/nginx/sites-enabled/ipayout-webhook")
    if not link.is_symlink():
        link.symlink_to("../sites-available/ipayout-webhook")
    for snippet in ("ipayout-webhook.conf", "ipayout-operator.conf"):
        check(f"package put the nginx snippet {snippet} in /etc/nginx/snippets",
              Path("/etc/nginx/snippets", snippet).read_bytes() ==
              (ROOT / "nginx" / snippet).read_bytes())
    t = sh("nginx", "-t", check_rc=False)
    need("nginx -t accepts the example site", t.returncode == 0, t.stderr)
    sh("systemctl", "restart", "nginx.service", timeout=60)
    need("nginx active", show("nginx.service", "ActiveState")["ActiveState"] == "active")


def step_socket_activation():
    say("# socket activation and readiness (Type=notify, READY=1 once the database answers)")
    sh("systemctl", "enable", "--now", SOCKET_UNIT)
    s = show(SERVICE, "ActiveState")
    need("before the first request: service inactive, socket listening",
         s["ActiveState"] == "inactive" and
         show(SOCKET_UNIT, "SubState")["SubState"] == "listening", s)
    # The database down: the pool starts but cannot become ready.
    sh("systemctl", "stop", "postgresql@15-main.service", timeout=60)
    t0 = time.monotonic()
    try:
        r = request(OPERATOR + "/ipayout/health", method="GET", timeout=15)
        first = f"{r.status} {r.body[:80]!r}"
    except OSError as e:
        first = repr(e)
    say(f"  first request (GET /ipayout/health via nginx, database stopped): {first}")
    samples = []
    for _ in range(15):
        s = show(SERVICE, "ActiveState", "SubState", "MainPID", "StatusText")
        samples.append((s["ActiveState"], s["SubState"]))
        time.sleep(0.2)
    s0 = show(SERVICE, "MainPID", "ExecMainStartTimestampMonotonic", "NRestarts")
    started = int(s0["ExecMainStartTimestampMonotonic"]) / 1e6
    check("the first request started the service (socket activation)",
          int(s0["MainPID"]) > 0 and started >= t0 - 0.5, s0)
    check("without the database: 'activating' for 3 s, never 'active' (no READY=1 yet)",
          set(samples) == {("activating", "start")}, samples)
    t_db = time.monotonic()
    sh("systemctl", "start", "postgresql@15-main.service", timeout=90)
    active = wait_until(lambda: show(SERVICE, "ActiveState")["ActiveState"] == "active", 30, 0.1)
    s = show(SERVICE, "ActiveState", "ActiveEnterTimestampMonotonic", "StatusText", "MainPID",
             "NRestarts")
    entered = int(s["ActiveEnterTimestampMonotonic"]) / 1e6
    check("'active' only after the database came back (READY=1), same process",
          active and entered > t_db and s["MainPID"] == s0["MainPID"] and s["NRestarts"] == "0"
          and s["StatusText"] == "database connected", s)
    check("journal: 'pool ready' logged by this invocation",
          wait_until(lambda: 'msg="pool ready"' in journal("-u", SERVICE, "-o", "cat",
                                                           f"_PID={s['MainPID']}"), 5))


def step_ingest(ep):
    say("# signed posts through nginx, rows, LISTEN")
    listener = psycopg2.connect(READER_DSN, connect_timeout=5)
    listener.autocommit = True
    with listener.cursor() as cur:
        cur.execute("LISTEN ipayout_events")
    marker = "body-marker-" + secrets.token_hex(8)
    res = post_events(ep, 10, marker)
    check("10 signed posts through nginx (TLS) answered 200 with an id",
          all(st == 200 and sid for _, sid, st in res), res)
    ids = [sid for _, sid, _ in res if sid]
    rows = dict(query("SELECT id, payload->>'eventId' FROM ipayout.events WHERE id = ANY(%s)",
                      (ids,)))
    check("every acknowledged event is a row with its eventId",
          all(rows.get(sid) == eid for eid, sid, _ in res), rows)
    got = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not set(ids) <= got:
        if select.select([listener], [], [], 0.5)[0]:
            listener.poll()
            while listener.notifies:
                n = listener.notifies.pop(0)
                got.add(json.loads(n.payload)["id"])
    listener.close()
    check("a LISTEN ipayout_events connection (reader role) got a notification per event",
          set(ids) <= got, f"missing {sorted(set(ids) - got)}")
    return marker, res


def step_journal(ep, marker):
    say("# journal: one line per request, no token, key or body")
    c = cursor()
    res = post_events(ep, 5, marker)
    bad = ep.post(json.dumps({"event": "X", "eventId": str(uuid.uuid4()), "note": marker}).encode(),
                  signature="AAAA")
    unknown_token = secrets.token_urlsafe(32)
    unknown = ep.post(b'{"event":"X"}', url=f"{BASE_URL}/ipayout/webhooks/{unknown_token}")
    statuses = [st for _, _, st in res] + [bad.status, unknown.status]
    say(f"  7 requests: {statuses}")
    expected = len(statuses)

    def request_lines():
        return [ln for ln in service_lines(c) if "msg=request" in ln]
    wait_until(lambda: len(request_lines()) >= expected, 10, 0.2)
    time.sleep(1.0)  # anything extra (a duplicate line) would arrive by now
    lines = request_lines()
    say("  e.g. " + (lines[0] if lines else "(none)"))
    check(f"journalctl -u {SERVICE}: exactly one msg=request line per request ({expected})",
          len(lines) == expected, "\n".join(lines))
    check("each stored id in exactly one line",
          all(sum(f" id={sid} " in ln + " " for ln in lines) == 1 for _, sid, _ in res), lines)
    check("the rejected ones logged too (401 signature_invalid, 404 unknown token)",
          any("status=401" in ln and "signature_invalid" in ln for ln in lines)
          and any("status=404" in ln for ln in lines), lines)
    everything = sh("journalctl", "--no-pager", "-o", "export", timeout=60).stdout
    leaks = [what for what, s in (("token", ep.token), ("unknown token", unknown_token),
                                  ("key", ep.key), ("body", marker)) if s in everything]
    check("the whole journal (every unit, every field) never holds the token, key or body",
          not leaks, f"found: {leaks}")


def step_reload(ep):
    say("# systemctl reload applies a reloadable setting (replay_window)")
    original = CONF.read_bytes()
    pid = show(SERVICE, "MainPID")["MainPID"]

    def stale():
        return ep.post(json.dumps({"event": "PAYMENT.COMPLETED",
                                   "eventId": str(uuid.uuid4())}).encode(),
                       ts=int(time.time()) - 120)

    before = stale().status
    try:
        text = original.decode()
        assert re.search(r"^replay_window = 300$", text, re.M), "conffile changed"
        CONF.write_text(re.sub(r"^replay_window = 300$", "replay_window = 60", text, flags=re.M))
        c = cursor()
        sh("systemctl", "reload", SERVICE, timeout=30)
        reloaded = wait_until(lambda: sum('msg="settings reloaded"' in ln
                                          for ln in service_lines(c)) >= 2, 10, 0.2)
        after = stale()
        check("replay_window 300 -> 60 by reload: a 120 s old signature 200 before, 401 after, "
              "same MainPID", before == 200 and reloaded and after.status == 401
              and b"timestamp_out_of_window" in after.body
              and show(SERVICE, "MainPID")["MainPID"] == pid,
              f"before={before} reloaded={reloaded} after={after}")
    finally:
        CONF.write_bytes(original)
        sh("systemctl", "reload", SERVICE, timeout=30)
    time.sleep(1.5)
    check("reload back to the shipped file: accepted again", stale().status == 200)


def run_ledger(ep, action, label, duration=9.0, at=3.0):
    """Signed load while `action` runs, then settle (redeliver what was not
    acknowledged, as i-payout would) and check every acknowledged event."""
    led = Ledger(ep.url, ep.key, ADMIN_DSN, ca=str(CERT), senders=6, duration=duration,
                 rate=LOAD_RATE, tag=label)
    led.start()
    time.sleep(at)
    t_action = time.monotonic()
    info = action()
    t_done = time.monotonic()
    led.wait()  # the load goes on after the action, for the whole duration
    rep = led.finish(settle=40)
    say(f"  {label} ledger: " + format_report(rep).replace("\n", f"\n  {label} ledger: "))
    acked_after = led.first_ack_after(t_done)
    ok = (led.clean(rep) and rep["unresolved"] == 0 and rep["acknowledged_during_load"] > 0
          and acked_after is not None)
    check(f"{label} under signed load: no acknowledged event lost (lost={rep['lost']} "
          f"duplicated={rep['duplicated']} unresolved={rep['unresolved']}, "
          f"{rep['acknowledged']} acknowledged)", ok,
          f"action took {t_done - t_action:.1f}s; acked after it: {acked_after is not None}")
    return info, rep


def step_restart_stop(ep_restart, ep_stop):
    say("# systemctl restart / stop under signed load (ledger)")

    def restart():
        pid = show(SERVICE, "MainPID")["MainPID"]
        sh("systemctl", "restart", SERVICE, timeout=90)
        return pid, show(SERVICE, "MainPID", "ActiveState")

    (old, new), _ = run_ledger(ep_restart, restart, "restart")
    check("restart: a new main process, active", new["MainPID"] not in ("0", old)
          and new["ActiveState"] == "active", (old, new))

    def stop():
        s = show(SERVICE, "MainPID", "InvocationID")
        sh("systemctl", "stop", SERVICE, timeout=90)
        return s

    before, _ = run_ledger(ep_stop, stop, "stop")
    old_lines = journal("-o", "cat", f"_SYSTEMD_INVOCATION_ID={before['InvocationID']}")
    check("stop: the stopped pool drained and exited cleanly ('pool stopped' in its invocation)",
          'msg="pool stopped"' in old_lines, old_lines[-1500:])
    wait_until(lambda: show(SERVICE, "ActiveState")["ActiveState"] == "active", 15, 0.1)
    s = show(SERVICE, "ActiveState", "NRestarts", "MainPID")
    check("stop: the next connection started it again through the socket",
          s["ActiveState"] == "active" and s["MainPID"] != before["MainPID"], s)


def step_sandbox():
    say("# the sandbox, from inside the running service's context")
    s = show(SERVICE, "MainPID", "ControlGroup")
    pid = int(s["MainPID"])
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(re.findall(r"^(\w+):\s*(.*)$", status, re.M))
    uid = int(sh("id", "-u", USER).stdout)
    gid = int(sh("id", "-g", USER).stdout)
    check("main process: the service user, no capabilities, no_new_privs, seccomp filter",
          fields["Uid"].split()[0] == str(uid) and int(fields["CapEff"], 16) == 0
          and int(fields["CapBnd"], 16) == 0 and fields["NoNewPrivs"] == "1"
          and fields["Seccomp"] == "2",
          {k: fields.get(k) for k in ("Uid", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp")})

    # A listener on an address the unit does not allow (IPAddressAllow=localhost).
    sh("ip", "addr", "replace", f"{FOREIGN_ADDR}/32", "dev", "lo")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((FOREIGN_ADDR, 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def accept_loop():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                c.close()
            except OSError:
                pass
    t = threading.Thread(target=accept_loop, daemon=True)
    t.start()
    probe_file = f"probe-{uuid.uuid4().hex}"
    probe = f"""
import errno, json, os, socket
out = {{}}
for d in ["/", "/etc", "/etc/ipayout-webhook", "/usr", "/var/lib", "/var/log", "/run",
          "/run/ipayout-webhook", "/run/postgresql", "/run/lock", "/root", "/home", "/tmp",
          "/var/tmp"]:
    try:
        fd = os.open(os.path.join(d, "{probe_file}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        out[d] = "written"
    except OSError as e:
        out[d] = errno.errorcode.get(e.errno, str(e.errno))
for name, addr in (("localhost", ("127.0.0.1", 5432)), ("foreign", ("{FOREIGN_ADDR}", {port}))):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect(addr)
        out[name] = "connected"
    except OSError as e:
        out[name] = type(e).__name__ + ":" + errno.errorcode.get(e.errno or 0, "")
    finally:
        s.close()
print(json.dumps(out))
"""
    # The service's mount namespace (ProtectSystem=, PrivateTmp=, ProtectHome=),
    # its cgroup (IPAddressDeny=/Allow= are BPF programs on it) and its user.
    unified = Path("/sys/fs/cgroup/unified")
    cg = (unified if unified.is_dir() else Path("/sys/fs/cgroup")) / s["ControlGroup"].lstrip("/")

    def join_cgroup():
        # No supplementary groups, dropped here: inside a PrivateUsers= namespace
        # setgroups() is denied.
        os.setgroups([])
        with open(cg / "cgroup.procs", "w") as f:
            f.write("0")

    # Its user namespace too, when it has one (PrivateUsers=yes).
    userns = ["--user"] if os.readlink(f"/proc/{pid}/ns/user") != os.readlink(
        "/proc/self/ns/user") else []
    p = subprocess.run(["nsenter", f"--target={pid}", "--mount", "--root", "--wd", *userns, "--",
                        "setpriv", f"--reuid={uid}", f"--regid={gid}", "--keep-groups",
                        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
                        "/usr/bin/python3", "-I", "-c", probe],
                       capture_output=True, text=True, timeout=30, preexec_fn=join_cgroup,
                       env=ENV, cwd="/")
    leaked_tmp = Path("/tmp", probe_file).exists() or Path("/var/tmp", probe_file).exists()
    # The same probe outside the sandbox, as the same user: what it would get without one.
    q = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                        "/usr/bin/python3", "-I", "-c", probe],
                       capture_output=True, text=True, timeout=30, env=ENV, cwd="/")
    stop.set()
    t.join()
    srv.close()
    try:
        inside = json.loads(p.stdout)
        outside = json.loads(q.stdout)
    except ValueError:
        check("sandbox probe ran", False, p.stdout + p.stderr + q.stdout + q.stderr)
        return
    for d in ("/run/ipayout-webhook", "/run/lock", "/tmp", "/var/tmp"):
        try:
            os.unlink(os.path.join(d, probe_file))  # the unsandboxed probe's files
        except OSError:
            pass
    say(f"  inside the service:  {inside}")
    say(f"  same user, outside: {outside}")
    read_only = ["/", "/etc", "/etc/ipayout-webhook", "/usr", "/var/lib", "/var/log", "/run",
                 "/run/ipayout-webhook", "/run/postgresql", "/run/lock"]
    check("cannot write outside its directories: EROFS everywhere (ProtectSystem=strict), "
          "even in /run/ipayout-webhook which its user owns",
          all(inside[d] == "EROFS" for d in read_only) and outside["/run/ipayout-webhook"] ==
          "written", {d: inside[d] for d in read_only})
    check("home directories inaccessible (ProtectHome=yes)",
          inside["/root"] != "written" and inside["/home"] != "written")
    check("writes only to its private /tmp and /var/tmp (PrivateTmp=yes), invisible outside",
          inside["/tmp"] == "written" and inside["/var/tmp"] == "written" and not leaked_tmp,
          inside)
    check("connects to localhost (PostgreSQL on 127.0.0.1:5432)", inside["localhost"] == "connected",
          inside)
    check(f"cannot connect to {FOREIGN_ADDR} (IPAddressDeny=any), which the same user outside can",
          inside["foreign"] != "connected" and outside["foreign"] == "connected",
          (inside["foreign"], outside["foreign"]))


def step_security():
    say("# systemd-analyze security (live)")
    live, p = security_score(SERVICE)
    if live:
        say(f"  live:    {live}")
    say(f"  offline: {OFFLINE_SCORE[0] if OFFLINE_SCORE else None} (the shipped file, "
        "before any drop-in)")
    for ln in p.stdout.splitlines():
        if ln.startswith("✗") and "PrivateUsers" in ln:
            say(f"  live, the drop-in's cost: {ln.strip()}")
    check(f"systemd-analyze security {SERVICE} (live) prints its score", live is not None,
          p.stdout[-1500:] + p.stderr)


def step_purge_timer():
    say("# the purge timer fires and purges only what every consumer has acked")
    grant_purge()
    envf = Path("/etc/ipayout-webhook/ipayout-events-purge.env")
    pgpass = Path("/etc/ipayout-webhook/ipayout-events-purge.pgpass")
    envf.write_text("IPAYOUT_DATABASE=postgresql://ipayout_purge@127.0.0.1:5432/ipayout\n")
    pgpass.write_text(f"127.0.0.1:5432:ipayout:ipayout_purge:{PURGE_PW}\n")
    for f in (envf, pgpass):
        os.chmod(f, 0o600)
    # Two consumers at different positions. Every event but the newest five is
    # made older than the retention period.
    feed = [r[0] for r in query("SELECT id FROM ipayout.events ORDER BY txid, id")]
    assert len(feed) > 20, len(feed)
    low, high = feed[len(feed) // 2], feed[-1]
    conn = psycopg2.connect(READER_DSN, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        for name, upto in (("ledger-billing", high), ("ledger-audit", low)):
            cur.execute("SELECT ipayout.subscribe(%s, 'beginning')", (name,))
            cur.execute("SELECT ipayout.ack(%s, %s)", (name, upto))
    conn.close()
    query("UPDATE ipayout.events SET received_at = now() - interval '40 days' "
          "WHERE id <> ALL(%s)", (feed[-5:],))
    expect_deleted = set(feed[:feed.index(low) + 1])
    expect_kept = set(feed) - expect_deleted
    TIMER_DROPIN.parent.mkdir(parents=True, exist_ok=True)
    # Fire 1 s after the timer starts, without its random delay; the daily
    # schedule stays as shipped.
    TIMER_DROPIN.write_text("[Timer]\nOnActiveSec=1s\nRandomizedDelaySec=0\n")
    sh("systemctl", "daemon-reload")
    sh("systemctl", "enable", "--now", PURGE_TIMER)

    def done():
        s = show(PURGE_SERVICE, "Result", "ExecMainExitTimestampMonotonic", "ActiveState")
        return s if int(s["ExecMainExitTimestampMonotonic"] or 0) > 0 and \
            s["ActiveState"] != "activating" else None
    s = wait_until(done, 30, 0.2)
    t = show(PURGE_TIMER, "LastTriggerUSec", "ActiveState", "NextElapseUSecRealtime")
    out = journal("-u", PURGE_SERVICE, "-o", "cat")
    say("  " + out.strip().replace("\n", "\n  "))
    check("the timer fired and the purge service succeeded",
          s is not None and s["Result"] == "success" and t["LastTriggerUSec"] not in ("", "n/a", "0")
          and t["ActiveState"] == "active", (s, t))
    left = {r[0] for r in query("SELECT id FROM ipayout.events WHERE id = ANY(%s)", (feed,))}
    check(f"purged exactly the old events both consumers acked ({len(expect_deleted)} of "
          f"{len(feed)}); kept {len(expect_kept)} (unacked by one consumer, or recent)",
          left == expect_kept, f"deleted unexpectedly: {sorted(expect_kept - left)[:10]}, "
          f"left unexpectedly: {sorted(left - expect_deleted - expect_kept)[:10]} "
          f"{sorted(left & expect_deleted)[:10]}")
    TIMER_DROPIN.unlink()
    TIMER_DROPIN.parent.rmdir()
    sh("systemctl", "daemon-reload")


def package_files():
    return [ln for ln in sh("dpkg-query", "-L", PACKAGE).stdout.splitlines()
            if ln.startswith("/") and Path(ln).is_file()]


def step_apt_purge(label):
    say(f"# apt-get purge ({label})")
    files = package_files()
    conffiles = [ln.split()[0] for ln in
                 sh("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout.strip().splitlines()]
    links = [Path("/etc/systemd/system/sockets.target.wants", SOCKET_UNIT),
             Path("/etc/systemd/system/timers.target.wants", PURGE_TIMER)]
    admin_files = [Path("/etc/ipayout-webhook/ipayout-events-purge.env"),
                   Path("/etc/ipayout-webhook/ipayout-events-purge.pgpass"),
                   Path("/etc/ipayout-webhook/ipayout-webhookd.env")]
    Path("/etc/ipayout-webhook/ipayout-webhookd.env").write_text("# IPAYOUT_LOG_LEVEL=debug\n")
    rows = query("SELECT count(*) FROM ipayout.events")[0][0]
    p = sh("apt-get", "purge", "-y", "-q", PACKAGE, timeout=300, check_rc=False)
    need("apt-get purge ipayout-webhook", p.returncode == 0 and package_state() is None,
         p.stdout[-1500:] + p.stderr[-1500:])
    left = [f for f in files + conffiles if Path(f).exists()]
    check("purge: every packaged file and conffile gone (units, binaries, nginx snippets, "
          "/etc/ipayout-webhook/ipayout-webhookd.conf)", not left, left)
    check("purge: the files the admin was told to create there, and /etc/ipayout-webhook, gone",
          not any(f.exists() for f in admin_files) and not CONF.parent.exists())
    check("purge: enablement links of socket and timer gone",
          not any(ln.is_symlink() for ln in links), links)
    check("purge: /run/ipayout-webhook gone", not RUN_DIR.exists())
    s = show(SOCKET_UNIT, "ActiveState", "LoadState")
    s2 = show(SERVICE, "ActiveState", "LoadState")
    check("prerm stopped socket and service; systemd forgot the units",
          s["ActiveState"] == "inactive" and s2["ActiveState"] == "inactive"
          and s["LoadState"] == "not-found", (s, s2))
    check("purge keeps the system user (Debian practice, packaging/postrm)",
          sh("getent", "passwd", USER, check_rc=False).returncode == 0)
    check("purge never touches the database",
          query("SELECT count(*) FROM ipayout.events")[0][0] == rows)


def migration_versions():
    return sorted(r[0] for r in query("SELECT version FROM ipayout.schema_migrations"))


def shipped_versions():
    return sorted(int(p.name.split("_", 1)[0]) for p in
                  Path("/usr/share/ipayout-webhook/sql").glob("*.sql"))


def step_upgrade(old_deb, new_deb):
    say(f"# upgrade: {Path(old_deb).parent.name}/{Path(old_deb).name} "
        f"(the previous release) under load -> {Path(new_deb).parent.name}/{Path(new_deb).name}")
    # The previous release from scratch: its own database, migrated by its binary.
    psql("DROP DATABASE IF EXISTS ipayout WITH (FORCE)", db="postgres")
    psql("CREATE DATABASE ipayout", db="postgres")
    install(old_deb)
    need("previous release installed", package_state() == "installed"
         and sh("dpkg-query", "-W", "-f=${Version}", PACKAGE).stdout == deb_version(old_deb))
    sh("runuser", "-u", "postgres", "--", "/usr/bin/ipayout-webhookd", "migrate",
       "--database=dbname=ipayout", timeout=120)
    old_versions = migration_versions()
    old_shipped = shipped_versions()
    ep = add_endpoint("upgrade", "pk_systest_up_" + secrets.token_hex(6))
    need("previous release: service answers through the socket", wait_endpoint_known(ep))
    pid = show(SERVICE, "MainPID")["MainPID"]
    old_exe = os.stat(f"/proc/{pid}/exe").st_ino
    new_bin = Path(tempfile.mkdtemp()) / "x"
    sh("dpkg-deb", "-x", new_deb, new_bin)

    def upgrade():
        out = install(new_deb, how="dpkg")
        m = sh("runuser", "-u", "postgres", "--", "/usr/bin/ipayout-webhookd", "migrate",
               "--database=dbname=ipayout", timeout=120, check_rc=False)
        return out, m

    (out, m), rep = run_ledger(ep, upgrade, "upgrade", duration=12.0, at=3.0)
    say("  dpkg -i: " + " | ".join(ln for ln in out.splitlines() if ln.strip())[-400:])
    say(f"  migrate after the upgrade: {(m.stdout + m.stderr).strip()}")
    s = show(SERVICE, "ActiveState", "MainPID", "NRestarts")
    exe = os.readlink(f"/proc/{s['MainPID']}/exe") if s["MainPID"] != "0" else ""
    check("upgrade: new package installed, the service running again on the new binary",
          sh("dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", PACKAGE).stdout ==
          f"installed {deb_version(new_deb)}" and s["ActiveState"] == "active"
          and s["MainPID"] != pid and exe == "/usr/bin/ipayout-webhookd"
          and os.stat(f"/proc/{s['MainPID']}/exe").st_ino != old_exe
          and Path("/usr/bin/ipayout-webhookd").read_bytes() ==
          (new_bin / "usr/bin/ipayout-webhookd").read_bytes(), (s, exe))
    shutil.rmtree(new_bin.parent)
    new_versions = migration_versions()
    say(f"  migrations: previous release {old_versions} (shipped {old_shipped}), "
        f"after upgrade {new_versions} (shipped {shipped_versions()})")
    check("upgrade: migrations applied (schema_migrations = every migration the new package has)",
          m.returncode == 0 and new_versions == shipped_versions() and old_versions == old_shipped,
          m.stdout + m.stderr)
    after = post_events(ep, 3, "after-upgrade")
    check("upgrade: signed posts accepted afterwards", all(st == 200 for _, _, st in after), after)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-deb", required=True)
    ap.add_argument("--old-deb", required=True)
    args = ap.parse_args()
    if os.getpid() == 1 or not Path("/run/systemd/system").is_dir():
        print("system_test.py: run it inside the root scripts/system-test boots", file=sys.stderr)
        return 2
    try:
        step_install(args.new_deb)
        step_private_users()
        step_database()
        ep = add_endpoint("shop")
        step_nginx()
        step_socket_activation()
        need("endpoint known to the pool", wait_endpoint_known(ep))
        marker, _ = step_ingest(ep)
        step_journal(ep, marker)
        step_reload(ep)
        ep_restart = add_endpoint("ledger-restart", "pk_systest_r_" + secrets.token_hex(6))
        ep_stop = add_endpoint("ledger-stop", "pk_systest_s_" + secrets.token_hex(6))
        wait_endpoint_known(ep_stop)
        step_restart_stop(ep_restart, ep_stop)
        step_sandbox()
        step_security()
        step_purge_timer()
        step_apt_purge("the new package")
        step_upgrade(args.old_deb, args.new_deb)
        step_apt_purge("after the upgrade")
    except Abort as e:
        say(f"# stopped: a step the rest depends on failed ({e})")
    except Exception:  # an unexpected error is a failure, with its cause on screen
        global failed
        failed += 1
        say("FAIL - unexpected error\n    " + traceback.format_exc().replace("\n", "\n    "))
    say(f"RESULT {passed} {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
