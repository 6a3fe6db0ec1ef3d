#!/usr/bin/env python3
"""bench/run's driver (bench/run installs and builds first, then runs this).

Measures, in one run and on a stack of its own:
  ceiling  nginx answering `return 200` over the same TLS listener setup
  pgbench  the same rows through ipayout.ingest(): one row per transaction and
           arrays of N, at the same client counts, plus N swept at the pool's
           writer count
  on/off   the product through nginx with TLS, batching on (batch_max as
           configured) and off (IPAYOUT_BATCH_MAX=1)
For each: events/s, p50/p99 latency, non-2xx, CPU per component, worker RSS,
and a check that every acknowledged event is in ipayout.events. Repetitions run
round-robin (rep 1 of everything, then rep 2, ...) so that drift on a shared
machine hits every configuration alike; tables show medians.
"""
import argparse
import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "scripts" / "stack"
LUA = ROOT / "bench" / "ipayout.lua"
DEFAULT_FIXTURE = ROOT / "tests" / "fixtures" / "payment_status_updated.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEY = "pk_bench_" + "3f9a1c"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log("error: " + msg)
    sys.exit(1)


# ------------------------------------------------------------------ processes and CPU


def proc_table():
    """pid -> (ppid, cpu ticks incl. reaped children, comm)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                line = f.read()
        except OSError:
            continue
        comm = line[line.index("(") + 1:line.rindex(")")]
        f = line[line.rindex(")") + 2:].split()
        # state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
        ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        out[int(d)] = (int(f[1]), ticks, comm)
    return out


def descendants(table, root):
    kids = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    seen, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in table:
            seen.append(p)
            todo.extend(kids.get(p, []))
    return seen


def tree_ticks(table, root):
    return sum(table[p][1] for p in descendants(table, root)) if root else 0


def cpu_stat():
    """Machine-wide ticks: busy, steal, niced (processes with nice > 0: the other
    engineers' builds and fuzzers here), irq+softirq (loopback networking)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    idle = v[3] + v[4]
    steal = v[7] if len(v) > 7 else 0
    return {"busy": sum(v[:8]) - idle - steal, "steal": steal, "nice": v[1], "irq": v[5] + v[6]}


class Meter:
    """CPU (in cores: CPU seconds per wall second) used by each process tree
    between start() and stop(), plus the whole machine's, so what other
    processes on a shared machine took is visible as `other`."""

    def __init__(self, roots):
        self.roots = {k: v for k, v in roots.items() if v}

    def start(self):
        self.t0 = time.monotonic()
        self.table0 = proc_table()
        self.ticks0 = {k: tree_ticks(self.table0, pid) for k, pid in self.roots.items()}
        self.stat0 = cpu_stat()

    def mark_end(self):
        self.t1 = time.monotonic()
        self.stat1 = cpu_stat()

    def stop(self, client_cpu_s=0.0, client_name="client"):
        if getattr(self, "t1", None) is None:
            self.mark_end()
        wall = self.t1 - self.t0
        # Backends of a client that just exited are reaped by their parent only
        # now; until then their CPU time is in neither table. Machine-wide
        # counters were read at the end of the load.
        time.sleep(0.3)
        table = proc_table()
        stat = self.stat1
        res = {}
        for k, pid in self.roots.items():
            res[k] = (tree_ticks(table, pid) - self.ticks0[k]) / CLK_TCK / wall
        res[client_name] = client_cpu_s / wall
        ours = sum(res.values())
        for k in ("busy", "steal", "nice", "irq"):
            res[k] = (stat[k] - self.stat0[k]) / CLK_TCK / wall
        res["total"] = res.pop("busy")
        # Interrupt time is nobody's process time; niced time is (here) never ours.
        res["other"] = max(0.0, res["total"] - ours - res["irq"])
        return {k: round(v, 3) for k, v in res.items()}


def run_measured(cmd, env=None, timeout=None):
    """Runs cmd, returns (returncode, stdout, stderr, cpu seconds of the child)."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return -9, out, err, 0.0
    # communicate() reaped it; its CPU is in our children's rusage. Read the
    # difference around the call instead: see measured_cpu().
    return p.returncode, out, err, None


def children_cpu():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def read_pid(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def worker_rss(master):
    """(sum VmRSS MB, max VmRSS MB, max VmHWM MB, n) over the pool's worker processes."""
    if not master:
        return None
    table = proc_table()
    rss, hwm = [], []
    for pid in descendants(table, master):
        if pid == master:
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        h = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        if m:
            rss.append(int(m.group(1)) / 1024)
            hwm.append(int(h.group(1)) / 1024 if h else 0)
    if not rss:
        return None
    return {"sum_mb": round(sum(rss), 1), "max_mb": round(max(rss), 1),
            "hwm_max_mb": round(max(hwm), 1), "n": len(rss)}


def rel_to_root(path):
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ------------------------------------------------------------------ the bench


class Bench:
    def __init__(self, a):
        self.a = a
        self.state = Path(os.environ.get("BENCH_STATE_DIR", ROOT / ".run" / "bench")).resolve()
        self.pg_port = int(os.environ.get("BENCH_PG_PORT", "29432"))
        # Below Linux's ephemeral range (32768-60999), so no client connection takes it.
        self.pg_fallback_port = int(os.environ.get("BENCH_PG_FALLBACK_PORT", "29433"))
        self.https_port = int(os.environ.get("BENCH_HTTPS_PORT", "9843"))
        # +1 and +2 are the stack's plain HTTP and operator servers.
        self.ceiling_port = int(os.environ.get("BENCH_CEILING_PORT", self.https_port + 10))
        self.runid = time.strftime("%m%d%H%M%S")
        self.out_dir = self.state / "results" / self.runid
        self.fixture = Path(a.fixture).read_bytes()
        m = re.search(rb'"eventId":"([^"]+)"', self.fixture)
        if not m:
            die(f"{a.fixture} has no eventId to make unique")
        self.fixture_event_id = m.group(1)
        self.runs = []  # every measurement, raw
        self.info = {}

    # ---------------------------------------------------------------- helpers

    def stack_env(self, extra=None, drop=()):
        env = dict(os.environ)
        env.update(IPAYOUT_STATE_DIR=str(self.state), IPAYOUT_PG_PORT=str(self.pg_port),
                   IPAYOUT_HTTPS_PORT=str(self.https_port), IPAYOUT_BIN=str(self.bin),
                   IPAYOUT_WORKERS=str(self.workers), IPAYOUT_THREADS=str(self.threads))
        for k in drop:
            env.pop(k, None)
        env.update(extra or {})
        return env

    def stack(self, *args, extra=None, drop=()):
        for attempt in range(8):
            p = subprocess.run([str(STACK), *args], env=self.stack_env(extra, drop),
                               capture_output=True, text=True, timeout=300)
            # PostgreSQL's port lies in Linux's ephemeral range (32768-60999): a
            # client connection of another program on this machine can hold it,
            # and then its TIME_WAIT does for 60 s more.
            if p.returncode == 0 or "Address already in use" not in p.stdout + p.stderr:
                break
            log(f"scripts/stack {args[0]}: a port is in use, retrying in 5 s")
            time.sleep(5)
        if p.returncode != 0 and "Address already in use" in p.stdout + p.stderr \
                and args[0] in ("pg-start", "start") and self.pg_port != self.pg_fallback_port:
            # Busy client connections on this machine keep reusing the port
            # (TIME_WAIT lasts 60 s): move PostgreSQL out of the ephemeral range.
            log(f"PostgreSQL port {self.pg_port} stays in use (client connections of other "
                f"programs); using {self.pg_fallback_port} instead")
            self.pg_port = self.pg_fallback_port
            return self.stack(*args, extra=extra, drop=drop)
        if p.returncode != 0:
            die(f"scripts/stack {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
        for line in p.stdout.splitlines():
            if "=" in line and line.split("=", 1)[0].isupper():
                k, v = line.split("=", 1)
                self.info[k] = v
        return p.stdout

    def psql(self, sql, *more, url=None):
        cmd = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
               url or f"postgresql://postgres@127.0.0.1:{self.pg_port}/ipayout", "-c", sql]
        for m in more:
            cmd += ["-c", m]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PGCONNECT_TIMEOUT="5"))
        if p.returncode != 0:
            die(f"psql failed: {sql[:200]}\n{p.stderr}")
        return p.stdout.strip()

    def daemon_config(self, env):
        p = subprocess.run([str(self.bin), "show-config"], env=env, capture_output=True,
                           text=True, timeout=30)
        if p.returncode != 0:
            die(f"{self.bin} show-config failed: {p.stderr}")
        cfg = {}
        for line in p.stdout.splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                cfg[k.strip()] = v.strip()
        return cfg

    # ---------------------------------------------------------------- setup

    def prepare(self):
        a = self.a
        self.state.mkdir(parents=True, exist_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for tool in ("wrk", "pgbench", "psql", "nginx"):
            if not shutil.which(tool, path=os.environ["PATH"] + ":/usr/sbin:/usr/lib/postgresql/15/bin"):
                die(f"{tool} not found (bench/run installs it: scripts/lib.sh)")
        self.pgbench_bin = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
        src = Path(os.environ.get("IPAYOUT_BIN", ROOT / "build" / "handler" / "ipayout-webhookd"))
        if not src.is_file():
            die(f"worker binary not found: {src}")
        # A copy: a rebuild of the tree during the run must not change what is measured.
        (self.state / "bin").mkdir(exist_ok=True)
        self.bin = self.state / "bin" / "ipayout-webhookd"
        tmp = self.bin.with_suffix(".new")
        shutil.copy2(src, tmp)
        os.replace(tmp, self.bin)  # a pool still running from an earlier run keeps its inode
        self.bin_sha = hashlib.sha256(self.bin.read_bytes()).hexdigest()[:16]
        self.bin_src = src

        clean = {k: v for k, v in os.environ.items() if not k.startswith("IPAYOUT_")}
        defaults = self.daemon_config(clean)
        self.workers = int(os.environ.get("IPAYOUT_WORKERS", defaults["workers"]))
        self.threads = int(os.environ.get("IPAYOUT_THREADS", defaults["threads"]))
        self.pool_overrides = {k: v for k, v in os.environ.items()
                               if k.startswith("IPAYOUT_") and k not in (
                                   "IPAYOUT_STATE_DIR", "IPAYOUT_PG_PORT", "IPAYOUT_HTTPS_PORT",
                                   "IPAYOUT_BIN", "IPAYOUT_WORKERS", "IPAYOUT_THREADS")}
        eff = self.daemon_config(dict(clean, **self.pool_overrides))
        self.batch_on = int(eff["batch_max"])
        self.eff_config = {k: eff[k] for k in ("batch_max", "queue_max", "log_level",
                                               "request_timeout_ms") if k in eff}

        log(f"stack in {self.state} (PostgreSQL :{self.pg_port}, HTTPS :{self.https_port}, "
            f"ceiling :{self.ceiling_port}); pool {self.workers} x {self.threads}")
        # A stack left over from an interrupted run would have other settings.
        self.stack("stop")
        self.stack("pg-start")
        need = max(a.conns) + 40
        cur = int(self.psql("SHOW max_connections", url=self.admin_url("postgres")))
        if cur < need:
            # pgbench at the highest client count needs the backends; the
            # product itself uses one connection per worker process.
            log(f"max_connections {cur} -> {need} for pgbench (bench cluster only)")
            self.psql(f"ALTER SYSTEM SET max_connections = {need}", url=self.admin_url("postgres"))
            self.stack("pg-stop")
        self.stack("start")
        self.base_url = self.info["BASE_URL"]
        self.db_url = self.info["DATABASE_URL"]
        self.worker_db_url = self.info["WORKER_DATABASE_URL"]
        self.pg_datadir = Path(self.info["PG_LOG"]).parent / "data"
        self.seed()
        self.start_ceiling()
        if "peer" not in a.skip:
            self.start_peer()

    def seed(self):
        """ipayout.events as a receiver that has run for a while has it: --seed-rows
        events of another endpoint, vacuumed and analyzed, so plans and index
        depth are those of a table in use. Rows of earlier runs go."""
        n = self.a.seed_rows
        self.psql("SET client_min_messages = warning",
                  "INSERT INTO ipayout.endpoints (name, token_hash, ipayout_key, notification_url) "
                  "VALUES ('bench-base', sha256('bench-base'::bytea), 'unused', 'https://unused.invalid') "
                  "ON CONFLICT (name) DO NOTHING")
        self.base_id = int(self.psql("SELECT id FROM ipayout.endpoints WHERE name = 'bench-base'"))
        if n == 0:
            self.psql("TRUNCATE ipayout.events")
            return
        self.psql(f"DELETE FROM ipayout.events WHERE endpoint_id <> {self.base_id}")
        have = int(self.psql(f"SELECT count(*) FROM ipayout.events WHERE endpoint_id = {self.base_id}"))
        if have < n:
            log(f"seeding ipayout.events with {n - have} rows")
            body = self.fixture.decode().replace("'", "''")
            old = self.fixture_event_id.decode()
            self.psql(
                "INSERT INTO ipayout.events (endpoint_id, event, dedup_key, payload, raw_body, headers, "
                "signature, remote_addr) "
                f"SELECT {self.base_id}, 'PAYMENT.STATUS.UPDATED', '/eventId=' || u, "
                f"replace('{body}', '{old}', u)::jsonb, replace('{body}', '{old}', u), "
                "'{\"content-type\":\"application/json\"}', 'valid', '127.0.0.1' "
                f"FROM (SELECT gen_random_uuid()::text AS u FROM generate_series(1, {n - have})) s")
        self.psql("VACUUM ANALYZE ipayout.events")

    def admin_url(self, db="ipayout"):
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{db}"

    def roots(self, ceiling=False):
        r = {
            "nginx": read_pid(self.state / "nginx" / "nginx.pid"),
            "pool": read_pid(self.state / "webhookd.pid"),
            "postgres": read_pid(self.pg_datadir / "postmaster.pid"),
        }
        if ceiling:
            r["nginx"] = read_pid(self.ceil_dir / "nginx.pid")
        return r

    # ---------------------------------------------------------------- HTTP ceiling

    def derive_nginx(self, d, port, snippet, keepalive=None, site_extra=""):
        """A second nginx beside the stack's, made from the stack's own files
        (its nginx.conf and the site it rendered from nginx/example-site.conf),
        with its own pid, logs and temp paths, the HTTPS listener (and the other
        two) moved to `port` (+1, +2), `snippet` in place of
        nginx/ipayout-webhook.conf, and optionally another upstream keepalive
        (0 = none). Every replaced text must be there: a change to the stack's
        files that this does not know about stops the bench instead of
        measuring something else. Returns the new nginx's pid."""
        (d / "tmp").mkdir(parents=True, exist_ok=True)
        self.stop_nginx(d)
        ngx = self.state / "nginx"
        conf = (ngx / "nginx.conf").read_text()
        site = (ngx / "site.conf").read_text()

        def swap(text, what, old, new):
            if old not in text:
                die(f"cannot derive an nginx in {d}: '{old}' not in the stack's {what}")
            return text.replace(old, new)

        for old, new in ((f'"{ngx}/nginx.pid"', f'"{d}/nginx.pid"'),
                         (f'"{ngx}/error.log"', f'"{d}/error.log"'),
                         (f'"{ngx}/tmp/', f'"{d}/tmp/'),
                         (f'include "{ngx}/site.conf";', f'include "{d}/site.conf";')):
            conf = swap(conf, "nginx.conf", old, new)
        site = swap(site, "site.conf", f"{ngx}/access.log", f"{d}/access.log")
        site = swap(site, "site.conf", f"include {ROOT}/nginx/ipayout-webhook.conf;",
                    f"include {d}/ipayout-webhook.conf;")
        for k in (0, 1, 2):
            site = swap(site, "site.conf", f"listen 127.0.0.1:{self.https_port + k}",
                        f"listen 127.0.0.1:{port + k}")
            site = site.replace(f"listen [::1]:{self.https_port + k}", f"listen [::1]:{port + k}")
        if keepalive is not None:
            line = f"keepalive {keepalive};" if keepalive else ""
            site, n = re.subn(r"(upstream ipayout_webhook \{[^}]*?)keepalive \d+;",
                              lambda m: m.group(1) + line, site, count=1)
            if n != 1:
                die("cannot find `keepalive N;` in the upstream block of the stack's site.conf")
        (d / "ipayout-webhook.conf").write_text(snippet)
        (d / "site.conf").write_text(site + site_extra)
        (d / "nginx.conf").write_text(conf)
        p = subprocess.run(["nginx", "-p", f"{d}/", "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
                           capture_output=True, text=True,
                           env=dict(os.environ, PATH=os.environ["PATH"] + ":/usr/sbin"))
        if p.returncode != 0:
            die(f"the nginx derived in {d} did not start: {p.stderr}")
        for _ in range(50):
            pid = read_pid(d / "nginx.pid")
            if pid:
                return pid
            time.sleep(0.1)
        die(f"the nginx derived in {d} wrote no pid file")

    def start_ceiling(self):
        """The HTTP ceiling: the stack's nginx, same site (TLS, limits, logs,
        worker settings), but /ipayout/webhooks/ answers `return 200` itself.
        The rest of the snippet (its named error locations) stays."""
        self.ceil_dir = self.state / "ceiling"
        snippet = (ROOT / "nginx" / "ipayout-webhook.conf").read_text()
        snippet, n = re.subn(r"(?ms)^location /ipayout/webhooks/ \{\n.*?^\}\n", """location /ipayout/webhooks/ {
    client_max_body_size 1m;
    client_body_buffer_size 1040k;
    types { }
    default_type application/json;
    add_header Cache-Control no-store always;
    return 200 '{"status":"accepted","id":0}';
}
""", snippet, count=1)
        if n != 1:
            die("nginx/ipayout-webhook.conf has no `location /ipayout/webhooks/ {` block to replace")
        self.derive_nginx(self.ceil_dir, self.ceiling_port, snippet)

    def start_alt_nginx(self, keepalive):
        """The stack's nginx with `keepalive N` in the upstream, or with N = 0
        without keepalive and with `fastcgi_keep_conn off` (one FastCGI
        connection per request): what keeping FastCGI connections open is worth."""
        snippet = (ROOT / "nginx" / "ipayout-webhook.conf").read_text()
        if "fastcgi_keep_conn on;" not in snippet:
            die("nginx/ipayout-webhook.conf has no 'fastcgi_keep_conn on;' to vary")
        if keepalive == 0:
            snippet = snippet.replace("fastcgi_keep_conn on;", "fastcgi_keep_conn off;")
        self.alt_port = self.https_port + 20
        return self.derive_nginx(self.state / "nginx-alt", self.alt_port, snippet, keepalive)

    def stop_ceiling(self):
        self.stop_nginx(self.ceil_dir)

    def stop_nginx(self, d):
        pid = read_pid(d / "nginx.pid")
        if pid and Path(f"/proc/{pid}").exists() and \
                str(d) in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            os.kill(pid, 15)
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)

    # ---------------------------------------------------------------- endpoints

    def add_endpoint(self, name):
        p = subprocess.run([str(self.bin), "endpoint", "add", name,
                            f"--notification-url={self.base_url}", "--policy=required",
                            f"--database={self.db_url}"],
                           env=dict(os.environ, IPAYOUT_KEY=KEY), capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 0:
            die(f"endpoint add {name} failed: {p.stderr}")
        url = p.stdout.strip()
        ep_id = int(self.psql(f"SELECT id FROM ipayout.endpoints WHERE name = '{name}'"))
        return {"name": name, "url": url, "id": ep_id}

    def post_status(self, url):
        u = url.split("/", 3)
        host, port = u[2].rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), timeout=10,
                                           context=ssl._create_unverified_context())
        try:
            conn.request("POST", "/" + u[3], body=b"{}",
                         headers={"Content-Type": "application/json", "x-timestamp": "1",
                                  "x-signature": "x"})
            r = conn.getresponse()
            r.read()
            return r.status
        except OSError:
            return None
        finally:
            conn.close()

    def wait_visible(self, url, timeout=20):
        """Until the pool answers the endpoint's URL with 401 (known, bad signature)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.post_status(url) == 401:
                return
            time.sleep(0.1)
        die(f"endpoint {url.rsplit('/', 1)[0]}/... never became visible to the pool")

    # ---------------------------------------------------------------- load: wrk

    def write_requests(self, prefix, url, count, nthreads):
        """Unique bodies (the fixture with a fresh eventId), signed now."""
        ts = str(int(time.time()))
        head = (ts + "#" + url + "#").encode()
        key = KEY.encode()
        old = self.fixture_event_id
        per = max(1, -(-count // nthreads))
        # eventId: a random UUID-shaped prefix per file and a counter, unique and cheap.
        pre, post = self.fixture.split(old, 1)
        for t in range(nthreads):
            # Format: ipayout.lua's header comment.
            chunks = [ts.encode() + b"\n"]
            rnd = uuid.uuid4().hex
            ev_prefix = (f"{rnd[:8]}-{rnd[8:12]}-4{rnd[13:16]}-8{rnd[17:20]}-").encode()
            for i in range(per):
                body = pre + ev_prefix + b"%012x" % i + post
                mac = hmac.digest(key, hashlib.sha256(head + body).digest(), "sha256")
                chunks.append(b"%s %d\n%s\n" % (base64.b64encode(mac), len(body), body))
            Path(f"{prefix}.{t}").write_bytes(b"".join(chunks))
        return per * nthreads

    def wrk(self, url, conns, prefix, tag, meter, ids=False):
        """Runs wrk; `meter` is started once wrk has loaded its requests (it prints
        "Running ..." after its Lua init), so loading is not counted as load."""
        threads = min(self.a.wrk_threads, conns)
        out = self.out_dir / f"{tag}.json"
        ids_file = self.out_dir / f"{tag}.ids"
        env = dict(os.environ, BENCH_REQS=str(prefix), BENCH_OUT=str(out))
        if ids:
            env["BENCH_IDS"] = str(ids_file)
        # stdbuf: wrk prints "Running ..." with printf, block-buffered into a pipe.
        cmd = ["stdbuf", "-oL", "wrk", "-t", str(threads), "-c", str(conns), "-d", f"{self.a.duration}s",
               "--timeout", "30s", "--latency", "-s", str(LUA), url]
        cpu0 = children_cpu()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        first = proc.stdout.readline()  # "Running 10s test @ ..." or an error
        init_cpu = 0.0
        try:
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            init_cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            pass
        meter.start()
        try:
            rest, _ = proc.communicate(timeout=self.a.duration + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        meter.mark_end()
        rc, stdout, stderr = proc.returncode, first + rest, ""
        cpu = children_cpu() - cpu0 - init_cpu
        (self.out_dir / f"{tag}.wrk.txt").write_text(stdout + stderr)
        if rc != 0 or not out.exists():
            die(f"wrk failed ({rc}): {stderr}\n{stdout}")
        r = json.loads(out.read_text())
        r["wrk_cpu_s"] = cpu
        r["wrk_threads"] = threads
        if ids:
            r["ids_file"] = str(ids_file)
        return r

    def measure_http(self, kind, url, conns, rep, prefix, ids, roots, extra=None):
        tag = f"{kind}-c{conns}-r{rep}"
        meter = Meter(roots)
        w = self.wrk(url, conns, prefix, tag, meter, ids=ids)
        cpu = meter.stop(w["wrk_cpu_s"], "wrk")
        dur = w["duration_us"] / 1e6
        run = {"kind": kind, "conns": conns, "rep": rep, "duration_s": round(dur, 3),
               "events_per_s": round(w["accepted"] / dur, 1),
               "requests_per_s": round(w["requests"] / dur, 1),
               "p50_ms": w["lat_p50_us"] / 1000, "p99_ms": w["lat_p99_us"] / 1000,
               "p999_ms": w["lat_p99.9_us"] / 1000, "max_ms": w["lat_max_us"] / 1000,
               "accepted": w["accepted"], "duplicate": w["duplicate"], "other2xx": w["other2xx"],
               "non2xx": w["non2xx"], "statuses": w["statuses"], "wrapped": w["wrapped"],
               "sock_errors": sum(w[f"err_{k}"] for k in ("connect", "read", "write", "timeout")),
               "wrk_threads": w["wrk_threads"], "cpu": cpu}
        run.update(extra or {})
        return run, w

    # ---------------------------------------------------------------- the product

    def product(self, mode, rep, endpoints, est_rate):
        extra = dict(self.mode_env(mode))
        drop = () if "IPAYOUT_BATCH_MAX" in extra or "IPAYOUT_BATCH_MAX" in self.pool_overrides \
            else ("IPAYOUT_BATCH_MAX",)
        keepalive = extra.pop("BENCH_FCGI_KEEPALIVE", None)
        self.stack("pool-stop")
        self.stack("pool-start", extra=extra, drop=drop)
        roots = self.roots()
        url_of = lambda ep: ep["url"]
        if keepalive is not None:
            # The same stack, through an nginx with another FastCGI keepalive.
            roots["nginx"] = self.start_alt_nginx(int(keepalive))
            url_of = lambda ep: ep["url"].replace(f":{self.https_port}/", f":{self.alt_port}/", 1)
        for c in self.a.conns:
            self.wait_visible(url_of(endpoints[(mode, c, rep)]))
        for c in self.a.conns:
            ep = endpoints[(mode, c, rep)]
            count = int(est_rate(mode, c) * self.a.duration * 1.3) + 2000
            count = min(count, self.a.max_bodies)
            prefix = self.out_dir / "reqs"
            threads = min(self.a.wrk_threads, c)
            t0 = time.time()
            self.write_requests(prefix, ep["url"], count, threads)  # signed for the registered URL
            self.settle()
            sign_s = time.time() - t0
            m0 = self.metrics()
            run, w = self.measure_http(mode, url_of(ep), c, rep, prefix, True, roots,
                                       {"batch_max": int(extra.get("IPAYOUT_BATCH_MAX", self.batch_on)),
                                        "bodies": count, "sign_and_settle_s": round(sign_s, 1)})
            run.update(self.metrics_delta(m0, self.metrics()))
            run["rss"] = worker_rss(self.roots()["pool"])
            time.sleep(0.5)  # requests cut off by wrk's stop may still commit
            run["check"] = self.check_acked(ep, w)
            self.report_run(run)
            self.runs.append(run)
            self.reset(ep)
        if keepalive is not None:
            self.stop_nginx(self.state / "nginx-alt")

    def metrics(self):
        """The pool's own counters (scripts/stack's operator server), if it has them."""
        url = self.info.get("METRICS_URL")
        if not url:
            return None
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        want = ("ipayout_batch_size_sum", "ipayout_batch_size_count",
                "ipayout_commit_duration_seconds_sum", "ipayout_commit_duration_seconds_count",
                "ipayout_request_duration_seconds_sum", "ipayout_request_duration_seconds_count",
                "ipayout_fastcgi_connections_total")
        out = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in want:
                out[parts[0]] = float(parts[1])
        return out

    @staticmethod
    def metrics_delta(m0, m1):
        if not m0 or not m1:
            return {}
        d = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1}
        res = {}
        if d.get("ipayout_batch_size_count"):
            res["batch_mean"] = round(d["ipayout_batch_size_sum"] / d["ipayout_batch_size_count"], 1)
            res["batches"] = int(d["ipayout_batch_size_count"])
        if d.get("ipayout_commit_duration_seconds_count"):
            res["commit_ms_mean"] = round(1000 * d["ipayout_commit_duration_seconds_sum"]
                                          / d["ipayout_commit_duration_seconds_count"], 2)
        if "ipayout_fastcgi_connections_total" in d:
            # New FastCGI connections nginx opened: above its keepalive cache
            # every request may open and close one.
            res["fastcgi_connections"] = int(d["ipayout_fastcgi_connections_total"])
        if d.get("ipayout_request_duration_seconds_count"):
            res["worker_ms_mean"] = round(1000 * d["ipayout_request_duration_seconds_sum"]
                                          / d["ipayout_request_duration_seconds_count"], 2)
        return res

    def mode_env(self, mode):
        if mode == "on":
            return {}
        if mode == "off":
            return {"IPAYOUT_BATCH_MAX": "1"}
        return self.a.variants[mode]

    def check_acked(self, ep, w):
        """Every accepted id returned to wrk is a row of this endpoint."""
        ids_file = w["ids_file"]
        stored = int(self.psql(f"SELECT count(*) FROM ipayout.events WHERE endpoint_id = {ep['id']}"))
        found = self.psql(
            "CREATE TEMP TABLE acked (id bigint)",
            f"\\copy acked FROM '{ids_file}'",
            "SELECT count(*) || ' ' || count(DISTINCT a.id) || ' ' || count(e.id) FROM acked a "
            f"LEFT JOIN ipayout.events e ON e.id = a.id AND e.endpoint_id = {ep['id']}")
        n, distinct, present = (int(x) for x in found.split())
        os.unlink(ids_file)
        return {"acked": w["accepted"], "ids": n, "distinct": distinct, "present": present,
                "stored": stored,
                "ok": n == w["accepted"] and distinct == n and present == n and stored >= n}

    def settle(self):
        """Same start for every measurement: dirty pages written out, a moment of quiet."""
        self.psql("CHECKPOINT")
        time.sleep(self.a.settle)

    def reset(self, ep):
        """Back to the seeded table: this run's rows go, VACUUM makes their space reusable."""
        if self.a.keep_rows:
            return
        if self.a.seed_rows == 0:
            self.psql("TRUNCATE ipayout.events")
        else:
            self.psql(f"DELETE FROM ipayout.events WHERE endpoint_id = {ep['id']}",
                      "VACUUM ipayout.events")

    # ---------------------------------------------------------------- the peer

    def start_peer(self):
        """bench/peers/node (Fastify + pg, what a merchant would write by hand)
        on the same PostgreSQL, behind an nginx derived from the stack's files
        like the ceiling's: same site, TLS and limits, but /ipayout/webhooks/
        goes to the peer with proxy_pass (HTTP/1.1 keepalive, as the stack keeps
        FastCGI connections open). Its own port (+30, +31, +32); Node on +35."""
        node = shutil.which("node")
        peer_dir = ROOT / "bench" / "peers" / "node"
        if not node or not (peer_dir / "node_modules" / "fastify").is_dir():
            die("the peer needs node and bench/peers/node/node_modules (bench/run installs them; "
                "or run `npm ci` there)")
        self.peer_port = self.https_port + 30
        node_port = self.https_port + 35
        self.peer_token = "P" * 43
        self.peer_url = f"https://127.0.0.1:{self.peer_port}/ipayout/webhooks/{self.peer_token}"
        self.peer_dir = self.state / "peer"
        self.peer_dir.mkdir(exist_ok=True)
        self.stop_peer()
        snippet = (ROOT / "nginx" / "ipayout-webhook.conf").read_text()
        snippet, n = re.subn(r"(?ms)^location /ipayout/webhooks/ \{\n.*?^\}\n", """location /ipayout/webhooks/ {
    proxy_pass http://ipayout_peer;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    client_max_body_size 1m;
    client_body_buffer_size 1040k;
    proxy_request_buffering on;
    client_body_timeout 10s;
    proxy_connect_timeout 2s;
    proxy_send_timeout 10s;
    proxy_read_timeout 15s;
    error_page 502 503 504 =503 @ipayout_unavailable;
}
""", snippet, count=1)
        if n != 1:
            die("nginx/ipayout-webhook.conf has no `location /ipayout/webhooks/ {` block to replace")
        log_f = open(self.peer_dir / "node.log", "ab")
        env = dict(os.environ, PEER_PORT=str(node_port), DATABASE_URL=self.db_url,
                   PEER_TOKEN=self.peer_token, PEER_NOTIFICATION_URL=self.peer_url, PEER_KEY=KEY)
        self.peer_proc = subprocess.Popen([node, str(peer_dir / "server.js")], env=env,
                                          stdout=log_f, stderr=log_f, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        (self.peer_dir / "node.pid").write_text(f"{self.peer_proc.pid}\n")
        for _ in range(100):
            if "listening" in (self.peer_dir / "node.log").read_text(errors="replace"):
                break
            if self.peer_proc.poll() is not None:
                die(f"the peer exited: {(self.peer_dir / 'node.log').read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            die("the peer did not start listening within 10 s")
        self.peer_nginx = self.derive_nginx(
            self.peer_dir / "nginx", self.peer_port, snippet,
            site_extra=f"\nupstream ipayout_peer {{\n    server 127.0.0.1:{node_port};\n    keepalive 32;\n}}\n")

    def stop_peer(self):
        self.stop_nginx(self.peer_dir / "nginx")
        proc = getattr(self, "peer_proc", None)
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def peer(self, rep, est_rate):
        roots = {"nginx": self.peer_nginx, "pool": self.peer_proc.pid,
                 "postgres": self.roots()["postgres"]}
        for c in self.a.conns:
            count = min(int(est_rate("peer", c) * self.a.duration * 1.3) + 2000, self.a.max_bodies)
            prefix = self.out_dir / "reqs"
            self.write_requests(prefix, self.peer_url, count, min(self.a.wrk_threads, c))
            self.settle()
            run, w = self.measure_http("peer", self.peer_url, c, rep, prefix, True, roots,
                                       {"bodies": count})
            try:
                rss = int(re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{self.peer_proc.pid}/status")
                                    .read_text(), re.M).group(1)) / 1024
                run["rss"] = {"sum_mb": round(rss, 1), "max_mb": round(rss, 1), "n": 1}
            except (OSError, AttributeError):
                pass
            time.sleep(0.5)
            ids_file = w["ids_file"]
            found = self.psql(
                "CREATE TEMP TABLE acked (id bigint)", f"\\copy acked FROM '{ids_file}'",
                "SELECT count(*) || ' ' || count(DISTINCT a.id) || ' ' || count(e.id) || ' ' || "
                "(SELECT count(*) FROM peer.events) FROM acked a LEFT JOIN peer.events e ON e.id = a.id")
            n, distinct, present, stored = (int(x) for x in found.split())
            os.unlink(ids_file)
            run["check"] = {"acked": w["accepted"], "ids": n, "distinct": distinct, "present": present,
                            "stored": stored,
                            "ok": n == w["accepted"] and distinct == n and present == n and stored >= n}
            self.report_run(run)
            self.runs.append(run)
            self.psql("TRUNCATE peer.events")

    # ---------------------------------------------------------------- the database ceiling

    def pgbench_script(self, n):
        """The writer's transaction as it sends it (one Query message: SET LOCAL
        x2 and SELECT ... ingest(arrays), one implicit transaction) with n rows, each the fixture with a fresh eventId and the dedup key the worker
        would derive (/eventId=<uuid>). The rows are built server-side."""
        body = self.fixture.decode().replace("'", "''")
        old = self.fixture_event_id.decode()
        headers = ('{"content-length":"%d","content-type":"application/json",'
                   '"host":"127.0.0.1:%d","x-signature":"%s","x-timestamp":"%d"}'
                   % (len(self.fixture), self.https_port, "A" * 43 + "=", int(time.time())))
        path = self.out_dir / f"ingest-{n}.sql"
        path.write_text(f"""SET LOCAL statement_timeout = 5000 \\; SET LOCAL lock_timeout = 5000 \\;
SELECT count(*) FROM
  (SELECT array_agg('/eventId=' || u ORDER BY i) AS k,
          array_agg(replace('{body}', '{old}', u) ORDER BY i) AS b
     FROM (SELECT i, gen_random_uuid()::text AS u FROM generate_series(1, :n::int) i) s) a,
  ipayout.ingest(array_fill(:ep::bigint, ARRAY[:n::int]),
                 array_fill('PAYMENT.STATUS.UPDATED'::text, ARRAY[:n::int]),
                 a.k, a.b,
                 array_fill(true, ARRAY[:n::int]),
                 array_fill('{headers}'::text, ARRAY[:n::int]),
                 array_fill('valid'::text, ARRAY[:n::int]),
                 array_fill('127.0.0.1'::text, ARRAY[:n::int])) r;
""")
        return path

    def pgbench(self, n, clients, rep, ep):
        tag = f"pgbench-n{n}-c{clients}-r{rep}"
        logdir = self.out_dir / tag
        logdir.mkdir(exist_ok=True)
        script = self.pgbench_script(n)
        cmd = [self.pgbench_bin, "-n", "-M", "simple", "-c", str(clients),
               "-j", str(min(clients, self.a.wrk_threads)), "-T", str(self.a.duration),
               "-f", str(script), "-D", f"n={n}", "-D", f"ep={ep['id']}",
               "-l", f"--log-prefix={logdir}/tx", self.worker_db_url]
        self.settle()
        meter = Meter({"postgres": self.roots()["postgres"]})
        meter.start()
        cpu0 = children_cpu()
        rc, out, err, _ = run_measured(cmd, timeout=self.a.duration + 180)
        meter.mark_end()
        cpu = meter.stop(children_cpu() - cpu0, "pgbench")
        (self.out_dir / f"{tag}.txt").write_text(out + err)
        if rc != 0:
            die(f"pgbench failed ({rc}):\n{out}\n{err}")
        tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
        txns = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
        failed = re.search(r"number of failed transactions: (\d+)", out)
        lat = []
        for f in logdir.iterdir():
            with open(f) as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 3 and parts[2].isdigit():
                        lat.append(int(parts[2]))
        shutil.rmtree(logdir)
        lat.sort()

        def pct(p):
            return lat[min(len(lat) - 1, int(len(lat) * p / 100))] / 1000 if lat else None

        stored = int(self.psql(f"SELECT count(*) FROM ipayout.events WHERE endpoint_id = {ep['id']}"))
        run = {"kind": "pgbench", "n": n, "conns": clients, "rep": rep,
               "txn_per_s": tps, "rows_per_s": round(tps * n, 1), "txns": txns,
               "failed": int(failed.group(1)) if failed else 0,
               "p50_ms": pct(50), "p99_ms": pct(99), "cpu": cpu,
               "check": {"stored": stored, "expected": txns * n, "ok": stored == txns * n}}
        self.report_run(run)
        self.runs.append(run)
        self.reset(ep)

    # ---------------------------------------------------------------- orchestration

    def report_run(self, r):
        cpu = " ".join(f"{k}={v:.2f}" for k, v in r["cpu"].items() if k not in ("steal", "nice"))
        if r["kind"] == "pgbench":
            log(f"  pgbench n={r['n']:<3} c={r['conns']:<3} rep {r['rep']}: {r['rows_per_s']:>9.0f} rows/s "
                f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms  check={'ok' if r['check']['ok'] else 'FAIL'}  cpu[{cpu}]")
        else:
            chk = r.get("check")
            rss = r.get("rss")
            log(f"  {r['kind']:<7} c={r['conns']:<3} rep {r['rep']}: {r['events_per_s']:>9.0f} ev/s "
                f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms non2xx={r['non2xx']} "
                f"err={r['sock_errors']}"
                + (f" check={'ok' if chk['ok'] else 'FAIL ' + json.dumps(chk)}" if chk else "")
                + (f" rss={rss['sum_mb']}/{rss['max_mb']}MB" if rss else "")
                + (f" batch={r['batch_mean']} commit={r.get('commit_ms_mean')}ms" if "batch_mean" in r else "")
                + f"  cpu[{cpu}]")

    def kind_name(self, kind):
        if kind == "ceiling":
            return "HTTP ceiling (nginx return 200)"
        if kind == "on":
            return f"product, batching on ({self.batch_on})"
        if kind == "off":
            return "product, batching off (1)"
        if kind == "peer":
            return "peer: bench/peers/node (Fastify + pg, 1 process, pool of 10)"
        env = " ".join(f"{k.replace('IPAYOUT_', '')}={v}" for k, v in self.a.variants[kind].items())
        return f"variant {kind}: {env}"

    def median(self, kind, key, **match):
        vals = [r[key] if not callable(key) else key(r) for r in self.runs
                if r["kind"] == kind and all(r.get(k) == v for k, v in match.items())]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def run(self):
        a = self.a
        self.prepare()
        self.machine = self.machine_info()
        modes = [m for m in ("on", "off") if m not in a.skip] + list(a.variants)
        endpoints = {}
        log("creating endpoints")
        for rep in range(1, a.reps + 1):
            for m in modes:
                for c in a.conns:
                    endpoints[(m, c, rep)] = self.add_endpoint(f"b{self.runid}-{m}-c{c}-r{rep}")
        ceil_token = "C" * 43
        ceil_url = f"https://127.0.0.1:{self.ceiling_port}/ipayout/webhooks/{ceil_token}"
        ceil_prefix = self.out_dir / "ceil"
        self.write_requests(ceil_prefix, ceil_url, a.wrk_threads * 20000, a.wrk_threads)
        if a.wrk_threads > 1:  # 1 connection means 1 wrk thread, which reads file .0 only
            pass

        def est_rate(mode, c):
            seen = [r["events_per_s"] for r in self.runs if r["kind"] == mode and r["conns"] == c]
            if seen:
                return max(seen) * 1.3
            ceil = [r["requests_per_s"] for r in self.runs if r["kind"] == "ceiling" and r["conns"] == c]
            return max(ceil) if ceil else a.default_rate

        t_start = time.time()
        for rep in range(1, a.reps + 1):
            log(f"=== repetition {rep} of {a.reps}")
            if "ceiling" not in a.skip:
                log("HTTP ceiling: nginx `return 200`, same TLS listener")
                for c in a.conns:
                    run, _ = self.measure_http("ceiling", ceil_url, c, rep, ceil_prefix, False,
                                               self.roots(ceiling=True))
                    self.report_run(run)
                    self.runs.append(run)
                    time.sleep(a.settle)
            if "pgbench" not in a.skip:
                log("database ceiling: pgbench through ipayout.ingest")
                plan = [(1, c) for c in a.conns] + [(a.pgbench_batch, c) for c in a.conns]
                plan += [(n, self.workers) for n in a.pgbench_sweep
                         if (n, self.workers) not in plan]
                for n, c in plan:
                    ep = self.add_endpoint(f"b{self.runid}-pg-n{n}-c{c}-r{rep}")
                    self.pgbench(n, c, rep, ep)
            for m in modes:
                log(f"product, {self.kind_name(m)}")
                self.product(m, rep, endpoints, est_rate)
            if "peer" not in a.skip:
                log(f"{self.kind_name('peer')}, behind the same nginx and TLS")
                self.peer(rep, est_rate)
            log(f"repetition {rep} done after {time.time() - t_start:.0f} s")
        self.elapsed = time.time() - t_start
        for f in list(self.out_dir.glob("reqs.*")) + list(self.out_dir.glob("ceil.*")):
            f.unlink()  # hundreds of MB; the bodies are not results
        (self.out_dir / "runs.json").write_text(json.dumps(
            {"machine": self.machine, "runs": self.runs}, indent=1))
        self.write_results()
        if "peer" not in a.skip:
            self.stop_peer()
        if not a.keep_running:
            self.stop_ceiling()
            self.stack("stop")
        else:
            self.stack("pool-stop")
            self.stack("pool-start")
            log(f"left running: {self.base_url} (scripts/stack with IPAYOUT_STATE_DIR={self.state})")

    # ---------------------------------------------------------------- report

    def machine_info(self):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
        mem = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        flags = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)
        flags = set(flags.group(1).split()) if flags else set()

        def git(*args):
            p = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
            # rstrip only: a porcelain line starts with a space (" M path").
            return p.stdout.rstrip() if p.returncode == 0 else ""

        dirty = [l[3:] for l in git("status", "--porcelain").splitlines()
                 if not l[3:].startswith("bench/")]
        pg = {k: self.psql(f"SHOW {k}") for k in (
            "server_version", "shared_buffers", "max_wal_size", "synchronous_commit", "fsync",
            "wal_sync_method", "commit_delay", "max_connections")}
        info = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(), "model": model.group(1) if model else "?",
            "mem_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
            "kernel": platform.release(),
            "simd": " ".join(f for f in ("sse4_2", "avx2", "avx512f") if f in flags),
            "commit": git("rev-parse", "--short=12", "HEAD"),
            "dirty": dirty,
            # Relative to the checkout when inside it: the file is read by others.
            "binary": f"{rel_to_root(self.bin_src)} (sha256 {self.bin_sha})",
            "pg": pg,
            "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
                    .splitlines() or ["?"])[0].split(" Copyright")[0],
            "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True,
                                    env=dict(os.environ, PATH=os.environ["PATH"] + ":/usr/sbin"))
            .stderr.strip().replace("nginx version: ", ""),
        }
        if not self.a.no_fsync_test:
            p = subprocess.run(["/usr/lib/postgresql/15/bin/pg_test_fsync", "-s", "1", "-f",
                                str(self.state / "fsync.test")], capture_output=True, text=True)
            m = re.search(r"^\s*fdatasync\s+([\d,.]+) ops/sec\s+(\d+) usecs/op", p.stdout, re.M)
            if m:
                info["fdatasync"] = f"{m.group(1)} ops/s ({m.group(2)} µs/op, pg_test_fsync, 8 kB writes)"
        return info

    def write_results(self):
        a, M = self.a, self.machine
        conns = a.conns
        L = []
        L.append("# Benchmark results\n")
        L.append("Written by `bench/run` (see its header for what it measures and how). "
                 "Not a test: numbers from a shared 2-core machine; rerun to compare.\n")
        L.append(f"- command: `{a.command}`")
        L.append(f"- date: {M['date']}; the run took {self.elapsed / 60:.1f} min")
        L.append(f"- machine: {M['nproc']} cores ({M['model']}; {M['simd']}), {M['mem_gib']} GiB, "
                 f"Linux {M['kernel']}")
        L.append(f"- commit: {M['commit']}" + (f" plus uncommitted changes in {', '.join(M['dirty'])}"
                                             if M["dirty"] else " (clean)"))
        L.append(f"- worker binary: {M['binary']}")
        L.append(f"- pool: {self.workers} workers x {self.threads} threads; batching on = "
                 f"batch_max {self.batch_on}, off = batch_max 1; other settings: "
                 + ", ".join(f"{k} {v}" for k, v in self.eff_config.items() if k != "batch_max")
                 + (f"; environment: {' '.join(f'{k}={v}' for k, v in self.pool_overrides.items())}"
                    if self.pool_overrides else ""))
        pg = M["pg"]
        L.append(f"- PostgreSQL {pg['server_version']} (port {self.pg_port}): fsync {pg['fsync']}, synchronous_commit "
                 f"{pg['synchronous_commit']}, wal_sync_method {pg['wal_sync_method']}, "
                 f"shared_buffers {pg['shared_buffers']}, max_wal_size {pg['max_wal_size']}"
                 + (f"; disk: fdatasync {M['fdatasync']}" if "fdatasync" in M else ""))
        L.append(f"- load: {M['wrk']}, {a.wrk_threads} threads (1 for 1 connection), HTTP/1.1 "
                 f"keep-alive over TLS; nginx {M['nginx']}, 1 worker process, to the pool over its unix "
                 f"socket with FastCGI keepalive as nginx/ipayout-webhook.conf sets it (`fastcgi_keep_conn on`, "
                 f"upstream `keepalive 32`) unless a variant says otherwise; every product "
                 f"request a unique {len(self.fixture)}-byte body signed right before its run")
        L.append(f"- each cell: median of {a.reps} runs of {a.duration} s (non-2xx and errors: "
                 f"the sum over all runs); runs interleaved rep by rep; a CHECKPOINT and "
                 f"{a.settle} s of quiet before each run; ipayout.events "
                 + (f"holds {a.seed_rows:,} rows of another endpoint (vacuumed, analyzed); each "
                    f"run's rows are deleted after it" if a.seed_rows else
                    "emptied (TRUNCATE) before each run"))
        L.append("")

        L.append("## Through nginx with TLS\n")
        L.append("events/s: answers `accepted` per second (the ceiling: any 200). "
                 "CPU: cores used by each part during the run (2 = both cores), "
                 "`irq` = interrupt time (loopback networking, TLS records), "
                 "`other` = processes outside this benchmark on the shared machine "
                 "(in brackets: how much of that ran niced, i.e. yielded to us).\n")
        L.append("| what | conns | events/s | p50 ms | p99 ms | non-2xx | sock err | every ack stored | "
                 "worker RSS sum / max MB | mean batch | CPU nginx | CPU pool | CPU postgres | CPU wrk | CPU irq | CPU other |")
        L.append("|---|--:|--:|--:|--:|--:|--:|:-:|--:|--:|--:|--:|--:|--:|--:|--:|")
        names = {k: self.kind_name(k) for k in ["ceiling", "on", "off", *a.variants, "peer"]}
        for kind in names:
            for c in conns:
                rs = [r for r in self.runs if r["kind"] == kind and r["conns"] == c]
                if not rs:
                    continue
                med = lambda k: statistics.median(r[k] for r in rs)
                cpu = lambda k: statistics.median(r["cpu"].get(k, 0) for r in rs)
                if kind == "ceiling":
                    ev = med("requests_per_s")
                    check, rss = "–", "–"
                    pool = "–"
                    pgcpu = "–"
                else:
                    ev = med("events_per_s")
                    oks = sum(1 for r in rs if r["check"]["ok"])
                    check = f"{'yes' if oks == len(rs) else 'NO'} ({oks}/{len(rs)})"
                    rr = [r["rss"] for r in rs if r.get("rss")]
                    rss = (f"{statistics.median(x['sum_mb'] for x in rr):.1f} / "
                           f"{max(x['max_mb'] for x in rr):.1f}") if rr else "?"
                    pool = f"{cpu('pool'):.2f}"
                    pgcpu = f"{cpu('postgres'):.2f}"
                bm = [r["batch_mean"] for r in rs if "batch_mean" in r]
                batch = f"{statistics.median(bm):.1f}" if bm else "–"
                L.append(f"| {names[kind]} | {c} | {ev:,.0f} | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} | "
                         f"{sum(r['non2xx'] for r in rs)} | {sum(r['sock_errors'] for r in rs)} | {check} | "
                         f"{rss} | {batch} | {cpu('nginx'):.2f} | {pool} | {pgcpu} | {cpu('wrk'):.2f} | "
                         f"{cpu('irq'):.2f} | {cpu('other'):.2f} ({cpu('nice'):.2f}) |")
        L.append("")

        L.append("## CPU per event (µs of CPU time per answered request; medians)\n")
        L.append("Less sensitive to the other load on a shared machine than events/s: "
                 "what each part costs, whatever the machine was doing.\n")
        L.append("| what | conns | nginx | pool | postgres | wrk | irq | all of the stack |")
        L.append("|---|--:|--:|--:|--:|--:|--:|--:|")
        for kind in names:
            for c in conns:
                rs = [r for r in self.runs if r["kind"] == kind and r["conns"] == c
                      and r["requests_per_s"] > 0]
                if not rs:
                    continue
                per = lambda k: statistics.median(r["cpu"].get(k, 0) / r["requests_per_s"] * 1e6 for r in rs)
                stack = statistics.median(sum(r["cpu"].get(k, 0) for k in ("nginx", "pool", "postgres", "irq"))
                                          / r["requests_per_s"] * 1e6 for r in rs)
                pool = "–" if kind == "ceiling" else f"{per('pool'):.0f}"
                pgc = "–" if kind == "ceiling" else f"{per('postgres'):.0f}"
                L.append(f"| {names[kind]} | {c} | {per('nginx'):.0f} | {pool} | {pgc} | "
                         f"{per('wrk'):.0f} | {per('irq'):.0f} | {stack:.0f} |")
        L.append("")

        L.append("## Ratios (medians of this run)\n")
        peer = any(r["kind"] == "peer" for r in self.runs)
        L.append("| conns | batching on / off | product (on) / HTTP ceiling | product (off) / HTTP ceiling |"
                 + (" product (on) / peer, events/s | peer / product (on), CPU of the stack per event |"
                    if peer else ""))
        L.append("|--:|--:|--:|--:|" + ("--:|--:|" if peer else ""))

        def stack_us(kind, c):
            v = [sum(r["cpu"].get(k, 0) for k in ("nginx", "pool", "postgres", "irq"))
                 / r["requests_per_s"] * 1e6 for r in self.runs
                 if r["kind"] == kind and r["conns"] == c and r["requests_per_s"] > 0]
            return statistics.median(v) if v else None

        for c in conns:
            on = self.median("on", "events_per_s", conns=c)
            off = self.median("off", "events_per_s", conns=c)
            ce = self.median("ceiling", "requests_per_s", conns=c)
            f = lambda x, y: f"{x / y:.2f}x" if x and y else "–"
            row = f"| {c} | {f(on, off)} | {f(on, ce)} | {f(off, ce)} |"
            if peer:
                row += f" {f(on, self.median('peer', 'events_per_s', conns=c))} | " \
                       f"{f(stack_us('peer', c), stack_us('on', c))} |"
            L.append(row)
        if peer:
            L.append("\nThe peer's rows: `CPU pool` is its Node process, `worker RSS` that "
                     "process's RSS; nginx and PostgreSQL are the same kind of process as the "
                     "product's (nginx derived from the stack's files, the same cluster).")
        L.append("")

        if any(r["kind"] == "pgbench" for r in self.runs):
            L.append("## Database ceiling: pgbench through ipayout.ingest()\n")
            L.append("The writer's transaction as it sends it (one Query message: SET LOCAL x2; "
                     "SELECT ... FROM ipayout.ingest(arrays of N), one implicit transaction; "
                     "as the role the pool uses), rows built "
                     "server-side from the same fixture with a fresh eventId each (so the "
                     "array text parsing the worker's literals cost is not included). "
                     "rows/s = transactions/s x N. Latency per transaction.\n")
            L.append("| rows per transaction | clients | rows/s | transactions/s | p50 ms | p99 ms | "
                     "rows stored = committed | CPU postgres | CPU pgbench | CPU other | postgres CPU µs per row |")
            L.append("|--:|--:|--:|--:|--:|--:|:-:|--:|--:|--:|--:|")
            keys = sorted({(r["n"], r["conns"]) for r in self.runs if r["kind"] == "pgbench"},
                          key=lambda k: (k[0] != 1, k[0] != a.pgbench_batch, k))
            for n, c in keys:
                rs = [r for r in self.runs if r["kind"] == "pgbench" and r["n"] == n and r["conns"] == c]
                med = lambda k: statistics.median(r[k] for r in rs)
                cpu = lambda k: statistics.median(r["cpu"].get(k, 0) for r in rs)
                oks = sum(1 for r in rs if r["check"]["ok"])
                L.append(f"| {n} | {c} | {med('rows_per_s'):,.0f} | {med('txn_per_s'):,.0f} | "
                         f"{med('p50_ms'):.2f} | {med('p99_ms'):.2f} | {'yes' if oks == len(rs) else 'NO'} "
                         f"({oks}/{len(rs)}) | {cpu('postgres'):.2f} | {cpu('pgbench'):.2f} | "
                         f"{cpu('other'):.2f} ({cpu('nice'):.2f}) | "
                         f"{statistics.median(r['cpu']['postgres'] / r['rows_per_s'] * 1e6 for r in rs):.0f} |")
            L.append("")

        def per_event(kind, part, c):
            v = [r["cpu"].get(part, 0) / r["requests_per_s"] * 1e6 for r in self.runs
                 if r["kind"] == kind and r["conns"] == c and r["requests_per_s"] > 0]
            return statistics.median(v) if v else None

        L.append("## Targets (issues 4 and 14; 64 connections unless said)\n")
        L.append("| target | measured | met |")
        L.append("|---|---|:-:|")
        on64 = self.median("on", "events_per_s", conns=64)
        off64 = self.median("off", "events_per_s", conns=64)
        p99_64 = self.median("on", "p99_ms", conns=64)
        p99_1 = self.median("on", "p99_ms", conns=1)
        # The product's workers only: the peer's row holds its Node process.
        rss_all = [r["rss"]["max_mb"] for r in self.runs if r.get("rss") and r["kind"] != "peer"]
        prod = [r for r in self.runs if r["kind"] not in ("ceiling", "pgbench", "peer")]
        peer64 = self.median("peer", "events_per_s", conns=64)
        yes = lambda b: "yes" if b else "**no**"
        if on64 is not None:
            L.append(f"| >= 20,000 durable events/s | {on64:,.0f} | {yes(on64 >= 20000)} |")
        if on64 and off64:
            L.append(f"| >= 3x batching off | {on64 / off64:.2f}x | {yes(on64 / off64 >= 3)} |")
        if on64 and peer64:
            L.append(f"| >= 8x the hand-written peer (issue 14) | {on64 / peer64:.2f}x | "
                     f"{yes(on64 / peer64 >= 8)} |")
        ce64 = self.median("ceiling", "requests_per_s", conns=64)
        if on64 and ce64:
            L.append(f"| >= 0.25 of the HTTP ceiling (issue 14) | {on64 / ce64:.2f}x | "
                     f"{yes(on64 / ce64 >= 0.25)} |")
        pool64 = per_event("on", "pool", 64)
        if pool64 is not None:
            L.append(f"| pool CPU <= 15 µs per event (issue 14) | {pool64:.0f} µs | {yes(pool64 <= 15)} |")
        pg1 = per_event("on", "postgres", 1)
        if pg1 is not None:
            L.append(f"| PostgreSQL CPU <= 200 µs per one-event commit (1 connection: batches of 1; "
                     f"issue 14) | {pg1:.0f} µs | {yes(pg1 <= 200)} |")
        if p99_64 is not None:
            worst = max(r["p99_ms"] for r in self.runs if r["kind"] == "on" and r["conns"] == 64)
            L.append(f"| p99 <= 10 ms (the median of the repetitions; issue 14: in every one) | "
                     f"{p99_64:.2f} ms (worst repetition {worst:.2f} ms) | "
                     f"{yes(p99_64 <= 10)} ({yes(worst <= 10)}) |")
        if p99_1 is not None:
            L.append(f"| p99 <= 2 ms at 1 connection | {p99_1:.2f} ms | {yes(p99_1 <= 2)} |")
        if rss_all:
            L.append(f"| worker RSS <= 32 MB each (largest seen, any run) | {max(rss_all):.1f} MB | "
                     f"{yes(max(rss_all) <= 32)} |")
        if prod:
            bad = sum(r["non2xx"] + r["sock_errors"] for r in prod)
            L.append(f"| zero non-2xx (all product runs) | {sum(r['non2xx'] for r in prod)} non-2xx, "
                     f"{sum(r['sock_errors'] for r in prod)} socket errors | {yes(bad == 0)} |")
            oks = sum(1 for r in prod if r["check"]["ok"])
            L.append(f"| every acknowledged event stored | {oks} of {len(prod)} runs checked ok, "
                     f"{sum(r['check']['acked'] for r in prod):,} acks | {yes(oks == len(prod))} |")
        L.append("")
        L.append(f"Raw data of this run (every repetition): `{self.out_dir.relative_to(ROOT) if self.out_dir.is_relative_to(ROOT) else self.out_dir}/runs.json` (not committed).")
        text = "\n".join(L) + "\n"
        out = Path(a.results)
        # Sections other scripts write (bench/curves.py's curves) stay, after this run's tables.
        prev = out.read_text() if out.exists() else ""
        if "\n<!-- section: " in prev:
            text += "\n" + prev[prev.index("\n<!-- section: ") + 1:]
        out.write_text(text)
        log(f"wrote {out}")
        print(text)


def build_parser():
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per measurement (10)")
    p.add_argument("--reps", type=int, default=3, help="repetitions; tables show medians (3)")
    p.add_argument("--conns", default="1,16,64,256", help="connection / client counts (1,16,64,256)")
    p.add_argument("--quick", action="store_true", help="try it out: --duration 3 --reps 1 --conns 1,64")
    p.add_argument("--skip", default="", help="comma list of: ceiling,pgbench,on,off,peer")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:VAR=VALUE[,VAR=VALUE]",
                   help="also measure the product with these pool environment variables, "
                        "e.g. t32:IPAYOUT_THREADS=32 or native:IPAYOUT_BIN=build-native/handler/ipayout-webhookd")
    p.add_argument("--pgbench-batch", type=int, default=64, help="rows per batched pgbench transaction (64)")
    p.add_argument("--pgbench-sweep", default="16,256",
                   help="more batch sizes, run at the pool's writer count (16,256; '' for none)")
    p.add_argument("--wrk-threads", type=int, default=2, help="wrk (and pgbench) threads (2)")
    p.add_argument("--settle", type=float, default=1.0, help="quiet seconds before each run (1)")
    p.add_argument("--default-rate", type=float, default=30000,
                   help="events/s to size the body files for when nothing was measured yet")
    p.add_argument("--max-bodies", type=int, default=800000, help="cap on bodies per run")
    p.add_argument("--fixture", default=str(DEFAULT_FIXTURE))
    p.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--keep-rows", action="store_true", help="do not delete each run's rows after it")
    p.add_argument("--seed-rows", type=int, default=100000,
                   help="rows of another endpoint kept in ipayout.events (100000); 0: an empty, "
                        "TRUNCATEd table before every run (stale statistics: the worst case)")
    p.add_argument("--keep-running", action="store_true", help="leave the bench stack running")
    p.add_argument("--no-fsync-test", action="store_true", help="skip pg_test_fsync")
    p.add_argument("--command", default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv=None):
    p = build_parser()
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.reps, a.conns = 3, 1, "1,64"
        if a.results == str(ROOT / "bench" / "RESULTS.md"):
            a.results = str(ROOT / ".run" / "bench-quick-RESULTS.md")
    a.conns = [int(x) for x in a.conns.split(",") if x]
    variants = {}
    for v in a.variant:
        name, _, spec = v.partition(":")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,20}", name) or name in ("on", "off", "ceiling", "pgbench"):
            p.error(f"--variant {v}: name must be 1-20 of [A-Za-z0-9_.-] and not a built-in kind")
        env = dict(kv.split("=", 1) for kv in spec.split(",") if kv)
        if "IPAYOUT_BIN" in env:
            env["IPAYOUT_BIN"] = str(Path(env["IPAYOUT_BIN"]).resolve())
        variants[name] = env
    a.variants = variants
    a.skip = {x for x in a.skip.split(",") if x}
    a.pgbench_sweep = [int(x) for x in a.pgbench_sweep.split(",") if x]
    a.command = a.command or "bench/bench.py " + " ".join(sys.argv[1:])
    return a


def main():
    Bench(parse_args()).run()


if __name__ == "__main__":
    main()
