#!/usr/bin/python3
"""Where PostgreSQL's CPU goes in a one-event commit (issue 14).

Backend CPU per transaction for pgbench scripts that each add one piece of
what the worker's commit does: a plain INSERT, the statement trigger and its
NOTIFY, ipayout.ingest() and its SET clauses, the worker's SET LOCALs. One
pgbench client (-M extended: unnamed statements, parsed every time, as the
worker's exec_params), so one backend: its CPU is read from
/proc/<pid>/schedstat (nanoseconds on CPU, user and system) at two moments
while it runs, and divided by the transactions pgbench logged as finished
between them. Connection start-up, catalog loading and plpgsql compilation
fall before the first moment and are not counted; client CPU never is.

Each configuration gets a database of its own in the cluster given (default:
the bench stack's, bench/run's BENCH_STATE_DIR and ports), made from the
migrations as they are in sql/:
  before  the migrations before 006 (ingest() as 001 made it)
  after   every sql/NNN_*.sql of this tree
and the scripts run in both. Repetitions are interleaved; the table shows
medians. Prints a Markdown table (nothing is written).

  bench/ingest_cost.py [--seconds 5] [--reps 3] [--only NAME,...]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
FIXTURE = (ROOT / "tests" / "fixtures" / "payment_status_updated.json").read_text()
HEADERS = ('{"content-length":"631","content-type":"application/json","host":"127.0.0.1:8443",'
           '"x-signature":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","x-timestamp":"1764151530"}')


def log(msg):
    print(f"[ingest_cost {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def q(s):
    return "'" + s.replace("'", "''") + "'"


BODY, HDR = q(FIXTURE), q(HEADERS)
COLS = "(endpoint_id, event, dedup_key, payload, raw_body, headers, signature, remote_addr)"
ROW = (f"(:ep, 'PAYMENT.STATUS.UPDATED', '/eventId=' || gen_random_uuid(), {BODY}::jsonb, {BODY}, "
       f"{HDR}::jsonb, 'valid', '127.0.0.1'::inet)")
ARGS = (f"ARRAY[:ep]::bigint[], ARRAY['PAYMENT.STATUS.UPDATED'], ARRAY['/eventId=' || gen_random_uuid()], "
        f"ARRAY[{BODY}], ARRAY[true], ARRAY[{HDR}], ARRAY['valid'], ARRAY['127.0.0.1']")
SETLOCAL = "SET LOCAL statement_timeout = 5000;\nSET LOCAL lock_timeout = 5000;\n"


def ingest_call(fn):
    return f"SELECT ord, id, accepted FROM {fn}({ARGS});\n"


# The worker's statement with its parameters as the worker sends them (text
# array literals, types from the casts); pgbench passes :variables as
# parameters in extended and prepared mode. A random dedup key per transaction.
PARAMS = ("\\set r random(1, 1000000000000000)\n"
          "BEGIN;\n" + SETLOCAL +
          "SELECT ord, id, accepted FROM ipayout.ingest(:eparr::bigint[], :evarr::text[], "
          "('{/eventId=' || :r || '}')::text[], :bodyarr::text[], '{t}'::boolean[], :hdrarr::text[], "
          "'{valid}'::text[], '{127.0.0.1}'::text[]);\nCOMMIT;\n")


def array_literal(s):
    return "{" + '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' + "}"


PARAM_DEFINES = {"evarr": "{PAYMENT.STATUS.UPDATED}", "bodyarr": array_literal(FIXTURE),
                 "hdrarr": array_literal(HEADERS)}
# For --callgrind (a single-user backend has no parameters): the worker's
# statement with its parameters written as text literals cast like the
# worker's ($1::bigint[] ...), and the same statement PREPAREd once and
# EXECUTEd: what preparing it in the worker would save.
_LIT = ("'{:ep}'::bigint[], '{PAYMENT.STATUS.UPDATED}'::text[], "
        "('{/eventId=' || gen_random_uuid() || '}')::text[], " + q(array_literal(FIXTURE)) + "::text[], "
        "'{t}'::boolean[], " + q(array_literal(HEADERS)) + "::text[], '{valid}'::text[], '{127.0.0.1}'::text[]")
CG_ONLY = {
    "ingest_literals": ("the worker's transaction, its parameters as text literals cast to arrays (as $1::bigint[])",
                        "", "BEGIN;\n" + SETLOCAL.replace(";\nSET", "; SET") +
                        f"SELECT ord, id, accepted FROM ipayout.ingest({_LIT});\nCOMMIT;\n"),
    "ingest_prepared": ("the same, the statement PREPAREd once per session and EXECUTEd",
                        "PREPARE ing(text, text, text, text) AS SELECT ord, id, accepted FROM ipayout.ingest("
                        "$1::bigint[], '{PAYMENT.STATUS.UPDATED}'::text[], $2::text[], $3::text[], "
                        "'{t}'::boolean[], $4::text[], '{valid}'::text[], '{127.0.0.1}'::text[]);\n",
                        "BEGIN;\n" + SETLOCAL.replace(";\nSET", "; SET") +
                        "EXECUTE ing('{:ep}', '{/eventId=' || gen_random_uuid() || '}', "
                        + q(array_literal(FIXTURE)) + ", " + q(array_literal(HEADERS)) + ");\nCOMMIT;\n"),
}
# Scripts that only pgbench can run (parameters), with the protocol they use.
PGBENCH_ONLY = {"ingest_params": "extended", "ingest_params_prepared": "prepared",
                "ingest_one_trip": "simple"}

# name -> (what it adds, pgbench script). Every script is one transaction.
SCRIPTS = {
    "select1": ("one round trip, no transaction block: the floor", "SELECT 1;\n"),
    "plain": ("BEGIN; INSERT one row into a copy of ipayout.events without trigger; COMMIT",
              f"BEGIN;\nINSERT INTO lab.plain {COLS} VALUES {ROW};\nCOMMIT;\n"),
    "plain_fk": ("plain into a copy with ipayout.events's foreign key to endpoints (its check runs)",
                 f"BEGIN;\nINSERT INTO lab.events_nt {COLS} VALUES {ROW};\nCOMMIT;\n"),
    "plain_notify": ("plain + SELECT pg_notify() of the same payload (a second statement)",
                     f"BEGIN;\nINSERT INTO lab.plain {COLS} VALUES {ROW};\n"
                     "SELECT pg_notify('ipayout_events', '{\"id\":1,\"event\":\"PAYMENT.STATUS.UPDATED\",\"endpoint\":\"lab\"}');\n"
                     "COMMIT;\n"),
    "events_insert": ("plain INSERT into ipayout.events: its foreign key check and its NOTIFY trigger run",
                      f"BEGIN;\nINSERT INTO ipayout.events {COLS} VALUES {ROW} "
                      "ON CONFLICT (endpoint_id, dedup_key) DO NOTHING RETURNING id;\nCOMMIT;\n"),
    "ingest": ("BEGIN; SELECT ... FROM ipayout.ingest(arrays of 1); COMMIT",
               "BEGIN;\n" + ingest_call("ipayout.ingest") + "COMMIT;\n"),
    "ingest_worker": ("what the worker sent before: BEGIN; SET LOCAL x2; ingest(); COMMIT (pgbench: 5 round trips, the worker 4)",
                      "BEGIN;\n" + SETLOCAL + ingest_call("ipayout.ingest") + "COMMIT;\n"),
    "ingest_one_trip": ("what the worker sends now: SET LOCAL x2; ingest() as one Query message "
                        "(one implicit transaction, one round trip)",
                        SETLOCAL.replace(";\n", " \\; ") + ingest_call("ipayout.ingest")),
    "ingest_params": ("the worker's transaction with the worker's parameters (text arrays), "
                      "unnamed statements (parsed and planned every time, as exec_params does)", PARAMS),
    "ingest_params_prepared": ("the same, every statement prepared once per connection (pgbench -M prepared)",
                               PARAMS),
    "ingest_noset": ("ingest()'s body, no SET clauses (not safe as SECURITY DEFINER; for measuring only)",
                     "BEGIN;\n" + ingest_call("lab.ingest_noset") + "COMMIT;\n"),
    "ingest_searchpath": ("ingest()'s body, SET search_path only",
                          "BEGIN;\n" + ingest_call("lab.ingest_searchpath") + "COMMIT;\n"),
    "ingest_notrigger": ("ingest() on a copy of ipayout.events without the NOTIFY trigger (with the foreign key)",
                         "BEGIN;\n" + ingest_call("lab.ingest_notrigger") + "COMMIT;\n"),
}


class Cluster:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def conninfo(self, db):
        if self.url.startswith("/"):  # a socket directory (the --callgrind cluster)
            return f"host={self.url} user=postgres dbname={db}"
        return f"{self.url}/{db}"

    def psql(self, db, sql=None, file=None, single=True):
        cmd = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", self.conninfo(db)]
        if single:
            cmd.append("-1")
        cmd += ["-f", str(file)] if file else ["-c", sql]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PGCONNECT_TIMEOUT="5", PGOPTIONS="-c client_min_messages=warning"))
        if p.returncode != 0:
            sys.exit(f"psql {db} failed: {(sql or str(file))[:200]}\n{p.stderr}")
        return p.stdout.strip()


def variant_functions(cluster, db):
    """Copies of the database's ipayout.ingest() with SET clauses removed, and one
    on a copy of the events table without the trigger: for measuring only."""
    src = cluster.psql(db, "SELECT pg_get_functiondef('ipayout.ingest(bigint[],text[],text[],text[],"
                           "boolean[],text[],text[],text[])'::regprocedure)")
    def variant(name, keep_sets, table="ipayout.events"):
        s = src.replace("FUNCTION ipayout.ingest(", f"FUNCTION lab.{name}(", 1)
        head, body = s.split("AS $function$", 1)
        # ipayout.in_ingest (006) is part of how it works, not a cost to take away.
        lines = [l for l in head.splitlines() if not l.strip().startswith("SET ")
                 or any(k in l for k in (*keep_sets, "ipayout.in_ingest"))]
        if table != "ipayout.events":
            # RETURNING names the table "events" or by its alias.
            body = re.sub(r"INSERT INTO ipayout\.events( AS \w+)?",
                          lambda m: f"INSERT INTO {table}{m.group(1) or ' AS events'}", body)
        return "\n".join(lines) + "\nAS $function$" + body
    return [variant("ingest_noset", ()), variant("ingest_searchpath", ("search_path",)),
            variant("ingest_notrigger", ("search_path", "plan_cache_mode"), "lab.events_nt")]


def setup_db(cluster, db, files):
    log(f"database {db}: {', '.join(f.name for f in files)}")
    cluster.psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", single=False)
    cluster.psql("postgres", f"CREATE DATABASE {db}", single=False)
    for f in files:
        cluster.psql(db, file=f)
    cluster.psql(db, """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ipayout_cost') THEN
    CREATE ROLE ipayout_cost LOGIN IN ROLE ipayout_writer;
  END IF;
END $$;
CREATE SCHEMA lab;
CREATE TABLE lab.plain (LIKE ipayout.events INCLUDING ALL);
-- ipayout.events without its NOTIFY trigger, with its foreign key (LIKE copies no FK).
CREATE TABLE lab.events_nt (LIKE ipayout.events INCLUDING ALL,
                            FOREIGN KEY (endpoint_id) REFERENCES ipayout.endpoints (id));
GRANT USAGE ON SCHEMA lab TO ipayout_writer;
GRANT INSERT, SELECT ON lab.plain, lab.events_nt, ipayout.events TO ipayout_writer;
INSERT INTO ipayout.endpoints (name, token_hash, ipayout_key, notification_url)
VALUES ('lab', sha256('lab'::bytea), 'k', 'https://lab.invalid');
""")
    for fn in variant_functions(cluster, db):
        cluster.psql(db, fn)
    cluster.psql(db, "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA lab TO ipayout_writer")
    for t in ("ipayout.events", "lab.plain", "lab.events_nt"):
        # No autovacuum worker in the middle of a measurement.
        cluster.psql(db, f"ALTER TABLE {t} SET (autovacuum_enabled = off)")
    return int(cluster.psql(db, "SELECT id FROM ipayout.endpoints WHERE name = 'lab'"))


def schedstat_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def measure(cluster, db, ep, name, seconds, tmp, sync):
    script = Path(tmp) / f"{name}.sql"
    script.write_text(SCRIPTS[name][1])
    prefix = Path(tmp) / f"log-{db}-{name}"
    for old in Path(tmp).glob(prefix.name + "*"):
        old.unlink()
    appname = f"cost-{name}-{time.monotonic_ns()}"
    url = f"{cluster.url.replace('postgres@', 'ipayout_cost@', 1)}/{db}"
    env = dict(os.environ, PGAPPNAME=appname, PGOPTIONS=f"-c synchronous_commit={sync}")
    cluster.psql(db, "CHECKPOINT", single=False)
    defines = dict(PARAM_DEFINES, ep=str(ep), eparr="{%d}" % ep)
    cmd = [PGBENCH, "-n", "-M", PGBENCH_ONLY.get(name, "extended"), "-c", "1", "-T", str(int(seconds)),
           "-f", str(script), "-l", f"--log-prefix={prefix}", url]
    for k, v in defines.items():
        cmd[1:1] = ["-D", f"{k}={v}"]
    p = subprocess.Popen(cmd,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = None
    for _ in range(100):
        out = cluster.psql("postgres", f"SELECT pid FROM pg_stat_activity WHERE application_name = '{appname}'",
                           single=False)
        if out:
            pid = int(out.split()[0])
            break
        time.sleep(0.05)
    if pid is None:
        p.kill()
        sys.exit(f"pgbench {name}: backend not found\n{p.communicate()}")
    # Warm: plans cached, plpgsql compiled, the table's pages in memory.
    time.sleep(min(1.0, seconds / 4))
    t1, c1 = time.time(), schedstat_ns(pid)
    time.sleep(seconds - 2 * min(1.0, seconds / 4))
    t2, c2 = time.time(), schedstat_ns(pid)
    out, err = p.communicate(timeout=seconds + 60)
    if p.returncode != 0:
        sys.exit(f"pgbench {name} failed:\n{out}\n{err}")
    n = 0
    lat = []
    for f in Path(tmp).glob(prefix.name + "*"):
        for line in f.read_text().splitlines():
            parts = line.split()
            # client_id transaction_no time script_no time_epoch time_us
            end = int(parts[4]) + int(parts[5]) / 1e6
            if t1 <= end <= t2:
                n += 1
                lat.append(int(parts[2]))
        f.unlink()
    if n == 0:
        sys.exit(f"pgbench {name}: no transaction between the two readings")
    return {"cpu_us": (c2 - c1) / 1000 / n, "lat_us": statistics.median(lat), "n": n}


PGBIN = "/usr/lib/postgresql/15/bin"


def as_pg(cmd, **kw):
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, cwd="/", **kw)


def callgrind(a, configs, names):
    """Instructions per transaction (valgrind's count: user space only, the
    same from run to run whatever else the machine does). A private cluster in
    --cg-dir, set up over its socket, then each script in a single-user backend
    (`postgres --single`, no client protocol) under callgrind, n1 and n2 times:
    the difference over n2 - n1 is one transaction, start-up excluded."""
    d = Path(a.cg_dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(d, "postgres")
    data = d / "data"
    if not (data / "PG_VERSION").exists():
        as_pg([f"{PGBIN}/initdb", "-D", str(data), "--username=postgres", "--auth=trust",
               "--encoding=UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    opts = f"-c listen_addresses='' -c unix_socket_directories='{d}' -c autovacuum=off"
    as_pg([f"{PGBIN}/pg_ctl", "start", "-w", "-D", str(data), "-l", str(d / "log"), "-o", opts],
          check=True, capture_output=True)
    try:
        cluster = Cluster(str(d))
        eps = {c: setup_db(cluster, f"ingest_cost_{c}", files) for c, files in configs.items()}
    finally:
        as_pg([f"{PGBIN}/pg_ctl", "stop", "-w", "-m", "fast", "-D", str(data)], check=True,
              capture_output=True)
    res = {}
    for c in configs:
        for name in [n for n in names if n not in PGBENCH_ONLY] + list(CG_ONLY):
            ir = []
            for n in (a.n1, a.n2):
                setup, txn = CG_ONLY[name][1:] if name in CG_ONLY else ("", SCRIPTS[name][1])
                txn = txn.replace(":ep", str(eps[c])).replace(";\n", ";\n\n")
                inp = d / f"{c}-{name}-{n}.sql"
                inp.write_text(setup.replace(";\n", ";\n\n") + txn * n)
                out = d / f"{c}-{name}-{n}.callgrind"
                with open(inp) as f:
                    p = as_pg(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                               f"{PGBIN}/postgres", "--single", "-j", "-D", str(data),
                               "-c", "synchronous_commit=off", "-c", "autovacuum=off",
                               f"ingest_cost_{c}"], stdin=f, capture_output=True, text=True)
                if p.returncode != 0 or "ERROR" in p.stdout + p.stderr:
                    sys.exit(f"postgres --single {c} {name} failed:\n{(p.stdout + p.stderr)[-3000:]}")
                m = re.search(r"^(?:totals|summary): (\d+)", out.read_text(), re.M)
                ir.append(int(m.group(1)))
            res[(c, name)] = (ir[1] - ir[0]) / (a.n2 - a.n1)
            log(f"{c:<6} {name:<18} {res[(c, name)] / 1000:8.1f} k instructions per transaction")
    cols = list(configs)
    print("| script | what it adds | " + " | ".join(f"k instructions ({c})" for c in cols) + " |")
    print("|---|---|" + "--:|" * len(cols))
    for name in [n for n in names if n not in PGBENCH_ONLY] + list(CG_ONLY):
        print(f"| {name} | {(CG_ONLY.get(name) or SCRIPTS[name])[0]} | "
              + " | ".join(f"{res[(c, name)] / 1000:.0f}" for c in cols) + " |")
    print(f"\n(callgrind files of the {a.n2}-transaction runs: {d}/*-{a.n2}.callgrind)")


def body_parse(a):
    """What PostgreSQL spends on a 1 MB body before storing it: the text array
    literal the worker sends parsed into text[], and the text parsed into
    jsonb. One backend's CPU per call (schedstat), minus the same statement
    with the value as plain text (the literal's lexing, which a parameter does
    not have)."""
    import psycopg2
    sys.path.insert(0, str(ROOT / "bench"))
    from curves import padded_fixture
    body = padded_fixture(a.body_bytes).decode()
    lit = '{"' + body.replace("\\", "\\\\").replace('"', '\\"') + '"}'
    conn = psycopg2.connect(a.url + "/postgres")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]

    def ms(sql, arg, n=20):
        cur.execute(sql, (arg,))
        c0 = schedstat_ns(pid)
        for _ in range(n):
            cur.execute(sql, (arg,))
            if cur.description:
                cur.fetchall()
        return (schedstat_ns(pid) - c0) / n / 1e6
    text = ms("SELECT length(%s::text)", body)
    text_lit = ms("SELECT length(%s::text)", lit)
    arr = ms("SELECT cardinality(%s::text[])", lit)
    jsb = ms("SELECT %s::jsonb IS NOT NULL", body)
    # Storing it: the same row (raw text and jsonb, as ipayout.events keeps a
    # body) into a table compressed with pglz (PostgreSQL's default) and one
    # with lz4 (sql/008), interleaved.
    store = {}
    for m in ("pglz", "lz4"):
        cur.execute(f"DROP TABLE IF EXISTS pg_temp.store_{m}; CREATE TEMP TABLE store_{m} "
                    f"(raw text COMPRESSION {m}, payload jsonb COMPRESSION {m})")
    for _ in range(3):
        for m in ("pglz", "lz4"):
            store.setdefault(m, []).append(
                ms(f"INSERT INTO store_{m} SELECT t, t::jsonb FROM (SELECT %s::text AS t) s", body, n=10))
    sizes = {}
    for m in ("pglz", "lz4"):
        cur.execute(f"SELECT pg_total_relation_size('store_{m}') / count(*) FROM store_{m}")
        sizes[m] = cur.fetchone()[0]
    print(f"body {len(body):,} bytes, as an array literal {len(lit):,} bytes; backend CPU ms per call:")
    print(f"| array literal -> text[] | {arr - text_lit:.1f} |\n| text -> jsonb | {jsb - text:.1f} |")
    for m in ("pglz", "lz4"):
        print(f"| store raw + jsonb, {m} (median of 3 x 10) | {statistics.median(store[m]):.1f} |"
              f" {sizes[m] / 1024:.0f} KiB per row |")
    conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=f"postgresql://postgres@127.0.0.1:{os.environ.get('BENCH_PG_PORT', '29432')}",
                    help="the cluster, as a superuser, without database (the bench stack's by default)")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="", help="comma list of script names")
    ap.add_argument("--configs", default="before,after")
    ap.add_argument("--synchronous-commit", default="off", choices=("on", "off"),
                    help="off (default): COMMIT does not wait for its WAL flush, so the fdatasync's "
                         "kernel time (the same for every script, and noisy on a shared disk) is "
                         "not in the backend's CPU; on: as the product runs")
    ap.add_argument("--callgrind", action="store_true",
                    help="count instructions under valgrind instead (stable on a busy machine)")
    ap.add_argument("--cg-dir", default=str(ROOT / ".run" / "ingest-cost"),
                    help="--callgrind's private cluster and callgrind files")
    ap.add_argument("--n1", type=int, default=20)
    ap.add_argument("--n2", type=int, default=120)
    ap.add_argument("--body-parse", action="store_true",
                    help="only: the CPU of parsing a big body (array literal, jsonb) and of "
                         "storing it compressed with pglz and with lz4")
    ap.add_argument("--body-bytes", type=int, default=1_000_000)
    a = ap.parse_args()
    if a.body_parse:
        return body_parse(a)
    cluster = Cluster(a.url)
    sql = sorted(ROOT.glob("sql/[0-9][0-9][0-9]_*.sql"))
    configs = {"before": [f for f in sql if f.name[:3] < "006"], "after": sql}
    configs = {k: v for k, v in configs.items() if k in a.configs.split(",")}
    names = [n for n in SCRIPTS if not a.only or n in a.only.split(",")]
    if a.callgrind:
        return callgrind(a, configs, names)
    eps = {c: setup_db(cluster, f"ingest_cost_{c}", files) for c, files in configs.items()}
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        for rep in range(a.reps):
            for c in configs:
                for name in names:
                    r = measure(cluster, f"ingest_cost_{c}", eps[c], name, a.seconds, tmp, a.synchronous_commit)
                    res.setdefault((c, name), []).append(r)
                    log(f"rep {rep + 1} {c:<6} {name:<18} {r['cpu_us']:7.1f} µs CPU/txn, "
                        f"latency {r['lat_us']:.0f} µs, {r['n']} txns")
    cols = list(configs)
    print("| script | what it adds | " + " | ".join(f"backend CPU µs ({c})" for c in cols)
          + " | " + " | ".join(f"latency µs ({c})" for c in cols) + " |")
    print("|---|---|" + "--:|" * (2 * len(cols)))
    for name in names:
        cpu = [f"{statistics.median(r['cpu_us'] for r in res[(c, name)]):.0f}" for c in cols]
        lat = [f"{statistics.median(r['lat_us'] for r in res[(c, name)]):.0f}" for c in cols]
        print(f"| {name} | {SCRIPTS[name][0]} | " + " | ".join(cpu) + " | " + " | ".join(lat) + " |")
    for c in configs:
        cluster.psql("postgres", f"DROP DATABASE IF EXISTS ingest_cost_{c} WITH (FORCE)", single=False)


if __name__ == "__main__":
    main()
