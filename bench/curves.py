#!/usr/bin/python3
"""Cost as the work grows (issue 14): three curves, each bounded in time.

  events     ipayout.events from empty to --max-rows (10 million) rows, made
             with generate_series in a database of its own: at each size the
             backend CPU of one ingest() transaction (the worker's: SET LOCAL
             and ingest() of one event in one round trip), of a consumer's poll(100)
             100 events behind the end, and of purge() per deleted row
  endpoints  1 to 100,000 endpoints: the worker's endpoint version check
             (every endpoint_refresh_ms, in every worker) and full reload
             queries (EXPLAIN ANALYZE), the pool's and PostgreSQL's CPU while
             idle, the CPU one changed endpoint costs (every worker reloads
             every endpoint), and the pool's CPU per request for an unknown token
  body       body sizes 1 KB to 1 MB through the product (nginx TLS, pool,
             PostgreSQL): events/s, MB/s, worker RSS, CPU per event

CPU is read per process (/proc/<pid>/schedstat for one backend, process-tree
ticks for the stack), so it moves much less with a shared machine's load than
rates do. Prints each table; writes bench/curves.png and replaces the curves
section of bench/RESULTS.md (bench/run keeps it when it rewrites the file).

  bench/curves.py [events|endpoints|body ...] [--max-rows N] [--no-write]

Uses bench/run's stack and ports (BENCH_STATE_DIR, BENCH_PG_PORT,
BENCH_HTTPS_PORT); run bench/run once first (it installs and builds).
"""
import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402  (bench.py: the stack, wrk, CPU meters)

ROOT = B.ROOT
SQL = sorted(ROOT.glob("sql/[0-9][0-9][0-9]_*.sql"))
FIXTURE = json.loads(B.DEFAULT_FIXTURE.read_text())
MARK_BEGIN = "<!-- section: curves (bench/curves.py) -->"
MARK_END = "<!-- end: curves -->"
log = B.log


def schedstat_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def tree_ns(root):
    """CPU ns of every thread of a process tree that is alive now (schedstat:
    nanoseconds, not 10 ms ticks). For long-lived processes and threads only."""
    total = 0
    for pid in B.descendants(B.proc_table(), root):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    return total


class Backend:
    """One connection and its server process's CPU."""

    def __init__(self, url):
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        self.cur = self.conn.cursor()
        self.cur.execute("SELECT pg_backend_pid()")
        self.pid = self.cur.fetchone()[0]

    def timed(self, fn, n):
        """(backend CPU µs, wall µs) per call of fn, over n calls after one warm-up."""
        fn()
        c0, t0 = schedstat_ns(self.pid), time.perf_counter()
        for _ in range(n):
            fn()
        return (schedstat_ns(self.pid) - c0) / 1000 / n, (time.perf_counter() - t0) * 1e6 / n

    def close(self):
        self.conn.close()


# ------------------------------------------------------------------ events


def ingest_txn(cur, ep):
    """The worker's transaction for one event, as the worker sends it: one Query
    message (SET LOCAL x2 and ingest(), one implicit transaction), its arrays
    as quoted text literals."""
    eid = os.urandom(16).hex()
    body = json.dumps(dict(FIXTURE, eventId=eid), separators=(",", ":"))
    cur.execute("SET LOCAL statement_timeout = 5000; SET LOCAL lock_timeout = 5000; "
                "SELECT ord, id, accepted FROM ipayout.ingest(%s::bigint[], %s::text[], %s::text[], "
                "%s::text[], %s::boolean[], %s::text[], %s::text[], %s::text[])",
                ("{%d}" % ep, '{"PAYMENT.STATUS.UPDATED"}', '{"/eventId=%s"}' % eid,
                 "{%s}" % json.dumps(body), "{t}", '{"{\\"content-type\\":\\"application/json\\"}"}',
                 "{valid}", "{127.0.0.1}"))
    cur.fetchall()


def curve_events(b, a):
    db = "curve_events"
    admin = f"postgresql://postgres@127.0.0.1:{b.pg_port}"
    b.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", url=f"{admin}/postgres")
    b.psql(f"CREATE DATABASE {db}", url=f"{admin}/postgres")
    url = f"{admin}/{db}"
    for f in SQL:
        b.psql(f.read_text(), url=url)
    b.psql("INSERT INTO ipayout.endpoints (name, token_hash, ipayout_key, notification_url) "
           "VALUES ('curve', sha256('curve'::bytea), 'k', 'https://curve.invalid'), "
           "('filler', sha256('filler'::bytea), 'k', 'https://filler.invalid')", url=url)
    ep = int(b.psql("SELECT id FROM ipayout.endpoints WHERE name = 'curve'", url=url))
    filler = int(b.psql("SELECT id FROM ipayout.endpoints WHERE name = 'filler'", url=url))
    sizes = [s for s in (0, 10_000, 100_000, 1_000_000, 3_000_000, 10_000_000) if s <= a.max_rows]
    # Filler bodies are small (a realistic one would make 10 million rows
    # about 17 GB): the indexes, which is what the costs below depend on, are
    # those of real rows.
    rows, have = [], 0
    for size in sizes:
        if size > have:
            t0 = time.time()
            # Filler spread over 60 days, oldest first (as they would arrive), a
            # random dedup key each (as real keys are); the real fixture body.
            # Chunks: each a transaction of its own, as the worker's would be.
            step = 500_000
            for lo in range(have, size, step):
                hi = min(size, lo + step)
                b.psql(f"INSERT INTO ipayout.events (endpoint_id, event, dedup_key, payload, raw_body, "
                       f"signature, received_at) SELECT {filler}, 'PAYMENT.STATUS.UPDATED', "
                       f"'/eventId=' || u, b::jsonb, b, 'valid', "
                       f"now() - interval '60 days' + (i * interval '60 days' / {a.max_rows}) "
                       f"FROM (SELECT i, u, '{{\"event\":\"PAYMENT.STATUS.UPDATED\",\"eventId\":\"' "
                       f"|| u || '\"}}' AS b FROM (SELECT i, gen_random_uuid()::text AS u "
                       f"FROM generate_series({lo + 1}, {hi}) i) s) f", url=url)
            b.psql("VACUUM ANALYZE ipayout.events", url=url)
            have = size
            log(f"events: {size:,} rows (+{time.time() - t0:.0f} s)")
        be = Backend(url)
        ins_cpu, ins_wall = be.timed(lambda: ingest_txn(be.cur, ep), a.calls)
        # A consumer 100 events behind the end, polled without moving.
        be.cur.execute("SELECT ipayout.unsubscribe('curve')")
        be.cur.execute(f"SELECT count(*) FROM ipayout.events WHERE endpoint_id = {ep}")
        for _ in range(max(0, 101 - be.cur.fetchone()[0])):
            ingest_txn(be.cur, ep)
        be.cur.execute("SELECT ipayout.subscribe('curve', 'beginning')")
        be.cur.execute("SELECT txid, id FROM ipayout.events ORDER BY txid DESC, id DESC OFFSET 100 LIMIT 1")
        t_pos = be.cur.fetchone()
        be.cur.execute("UPDATE ipayout.consumers SET position_txid = %s, position_id = %s "
                       "WHERE name = 'curve'", t_pos)

        def poll():
            be.cur.execute("BEGIN")
            be.cur.execute("SELECT count(*) FROM ipayout.poll('curve', 100)")
            assert be.cur.fetchone()[0] == 100
            be.cur.execute("COMMIT")
        poll_cpu, poll_wall = be.timed(poll, a.calls)
        be.cur.execute("SELECT ipayout.unsubscribe('curve')")
        # purge: batches of 1,000 of the oldest rows (kept ones would need a
        # consumer behind them: there is none). Rows purged are few beside the
        # table's; the table is refilled to its size after.
        purge_cpu = purge_wall = None
        if size >= 10_000:
            # A consumer that is caught up: purge checks every row against it.
            be.cur.execute("SELECT ipayout.subscribe('curve', 'end')")
            pc, pw = be.timed(lambda: be.cur.execute("SELECT ipayout.purge('30 days', false, 1000)"), 5)
            purge_cpu, purge_wall = pc / 1000, pw / 1000
            be.cur.execute("SELECT ipayout.unsubscribe('curve')")
        be.cur.execute("SELECT pg_total_relation_size('ipayout.events')")
        mb = be.cur.fetchone()[0] / 2**20
        be.close()
        rows.append({"rows": size, "mb": round(mb), "insert_cpu_us": round(ins_cpu),
                     "insert_wall_us": round(ins_wall), "poll_cpu_us": round(poll_cpu),
                     "poll_wall_us": round(poll_wall),
                     "purge_cpu_us_per_row": purge_cpu and round(purge_cpu, 1),
                     "purge_wall_us_per_row": purge_wall and round(purge_wall, 1)})
        log(f"events {size:>10,}: {rows[-1]}")
    if not a.keep:
        b.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", url=f"{admin}/postgres")
    return rows


# ------------------------------------------------------------------ endpoints


def explain_ms(b, sql):
    plan = json.loads(b.psql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))[0]
    return plan["Execution Time"] + plan.get("Planning Time", 0)


def set_endpoints(b, n):
    """n endpoints named curve-ep-<i> besides the bench's own (which stay)."""
    b.psql("DELETE FROM ipayout.endpoints e WHERE name LIKE 'curve-ep-%' AND NOT EXISTS "
           "(SELECT FROM ipayout.events v WHERE v.endpoint_id = e.id)")
    have = int(b.psql("SELECT count(*) FROM ipayout.endpoints WHERE name LIKE 'curve-ep-%'"))
    if n > have:
        b.psql("INSERT INTO ipayout.endpoints (name, token_hash, ipayout_key, notification_url) "
               "SELECT 'curve-ep-' || i, sha256(('curve-ep-' || i)::bytea), 'pk_curve_' || md5(i::text), "
               "'https://hooks.example.com/ipayout/webhooks/' || md5(i::text) "
               f"FROM generate_series({have + 1}, {n}) i")
    b.psql("VACUUM ANALYZE ipayout.endpoints")


def curve_endpoints(b, a):
    rows = []
    refresh_s = 1.0  # the daemon's endpoint_refresh_ms default
    bad_url = f"{b.base_url}/ipayout/webhooks/{'Z' * 43}"
    for n in [int(x) for x in a.endpoints.split(",")]:
        set_endpoints(b, n - 1)  # plus bench-base
        total = int(b.psql("SELECT count(*) FROM ipayout.endpoints"))
        version_ms = statistics.median(explain_ms(
            b, "SELECT count(*)::text || '/' || coalesce(max(updated_at)::text, '') FROM ipayout.endpoints")
            for _ in range(5))
        load_ms = statistics.median(explain_ms(
            b, "SELECT id, name, token_hash, ipayout_key, notification_url, signature_policy, "
               "success_status, coalesce(success_body, '') FROM ipayout.endpoints WHERE enabled")
            for _ in range(3))
        b.stack("pool-stop")
        b.stack("pool-start")
        time.sleep(3)  # the first full load
        roots = {"pool": B.read_pid(b.state / "webhookd.pid"), "postgres": b.roots()["postgres"]}
        rss = B.worker_rss(roots["pool"])
        def cpu_ms(seconds, action=None):
            """ms of CPU of the pool and of PostgreSQL's live processes over `seconds`."""
            n0 = {k: tree_ns(v) for k, v in roots.items()}
            if action:
                action()
            time.sleep(seconds)
            return {k: (tree_ns(v) - n0[k]) / 1e6 for k, v in roots.items()}
        base = cpu_ms(a.idle)
        idle = {k: v / a.idle for k, v in base.items()}  # ms per second
        # One endpoint changes: every worker reloads every endpoint at its next refresh.
        reload_cpu = []
        for _ in range(3):
            r = cpu_ms(refresh_s * 3, lambda: b.psql(
                "UPDATE ipayout.endpoints SET success_status = 200 + (success_status - 199) % 2 "
                "WHERE name = 'bench-base'"))
            reload_cpu.append({k: r[k] - idle[k] * refresh_s * 3 for k in r})
        rss2 = B.worker_rss(roots["pool"])
        # Unknown token: the lookup and a 404, through nginx, a few seconds.
        prefix = b.out_dir / "curve-404"
        b.write_requests(prefix, bad_url, 20000, 2)
        run, _ = b.measure_http("ep404", bad_url, 4, 1, prefix, False, b.roots())
        for f in b.out_dir.glob("curve-404.*"):
            f.unlink()
        rps = run["requests_per_s"] or 1
        rows.append({"endpoints": total, "version_check_ms": round(version_ms, 2),
                     "full_load_ms": round(load_ms, 2),
                     "idle_pool_cpu_ms_per_s": round(idle["pool"], 3),
                     "idle_postgres_cpu_ms_per_s": round(idle["postgres"], 3),
                     "reload_pool_cpu_ms": round(statistics.median(x["pool"] for x in reload_cpu), 1),
                     "reload_postgres_cpu_ms": round(statistics.median(x["postgres"] for x in reload_cpu), 1),
                     "worker_rss_mb": rss2["max_mb"] if rss2 else None,
                     "rss_before_mb": rss["max_mb"] if rss else None,
                     "unknown_token_pool_cpu_us": round(run["cpu"]["pool"] / rps * 1e6, 1),
                     "unknown_token_rps": round(rps), "unknown_token_non404": run["non2xx"] - sum(
                         v for k, v in run["statuses"].items() if k == "404")})
        log(f"endpoints {total:>7,}: {rows[-1]}")
    set_endpoints(b, 0)
    b.stack("pool-stop")
    b.stack("pool-start")
    return rows


# ------------------------------------------------------------------ body size


def padded_fixture(size):
    """The fixture with an `items` array of copies of its `data` object, as
    long as it takes to be about `size` bytes: JSON as compressible as real."""
    doc = dict(FIXTURE)
    item = json.dumps(FIXTURE["data"], separators=(",", ":"))
    base = len(json.dumps(doc, separators=(",", ":"))) + len(',"items":[]')
    k = max(0, -(-(size - base) // (len(item) + 1)))  # at least `size`
    doc["items"] = [FIXTURE["data"]] * k
    return json.dumps(doc, separators=(",", ":")).encode()


def curve_body(b, a):
    saved = b.fixture, b.fixture_event_id
    try:
        return body_sizes(b, a)
    finally:
        b.fixture, b.fixture_event_id = saved  # the other curves sign the fixture


def body_sizes(b, a):
    rows = []
    ep = b.add_endpoint(f"curve-body-{b.runid}")
    b.wait_visible(ep["url"])
    conns = 16
    for size in [int(x) for x in a.sizes.split(",")]:
        body = padded_fixture(size)
        b.fixture = body
        m = re.search(rb'"eventId":"([^"]+)"', body)
        b.fixture_event_id = m.group(1)
        # Bounded request files: at most ~300 MB of bodies; wrk repeats them
        # (answered as duplicates, counted apart) when a run outpaces them.
        count = max(200, min(40000, 300_000_000 // len(body)))
        prefix = b.out_dir / "curve-body"
        b.write_requests(prefix, ep["url"], count, 2)
        b.settle()
        roots = b.roots()
        b.stack("pool-stop")
        b.stack("pool-start")
        b.wait_visible(ep["url"])
        roots = b.roots()
        run, w = b.measure_http("body", ep["url"], conns, 1, prefix, False, roots)
        rss = B.worker_rss(roots["pool"])
        for f in b.out_dir.glob("curve-body.*"):
            f.unlink()
        ev = run["events_per_s"]
        per = lambda k: round(run["cpu"][k] / ev * 1e6) if ev else None
        rows.append({"bytes": len(body), "events_per_s": round(ev), "mb_per_s": round(ev * len(body) / 1e6, 1),
                     "p99_ms": run["p99_ms"], "duplicates": run["duplicate"], "non2xx": run["non2xx"],
                     "worker_rss_mb": rss["max_mb"] if rss else None,
                     "worker_hwm_mb": rss["hwm_max_mb"] if rss else None,
                     "cpu_us_nginx": per("nginx"), "cpu_us_pool": per("pool"),
                     "cpu_us_postgres": per("postgres")})
        log(f"body {len(body):>9,} B: {rows[-1]}")
        b.psql(f"DELETE FROM ipayout.events WHERE endpoint_id = {ep['id']}", "VACUUM ipayout.events")
    return rows


# ------------------------------------------------------------------ output


def table(rows, cols):
    head = "| " + " | ".join(h for h, _ in cols) + " |"
    sep = "|" + "--:|" * len(cols)
    body = []
    for r in rows:
        cells = []
        for _, k in cols:
            v = r.get(k)
            cells.append("–" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v}"))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


EVENTS_COLS = [("rows in ipayout.events", "rows"), ("table + indexes MB", "mb"),
               ("ingest txn: backend CPU µs", "insert_cpu_us"), ("wall µs", "insert_wall_us"),
               ("poll(100): backend CPU µs", "poll_cpu_us"), ("wall µs", "poll_wall_us"),
               ("purge: backend CPU µs per row", "purge_cpu_us_per_row"),
               ("wall µs per row", "purge_wall_us_per_row")]
ENDPOINT_COLS = [("endpoints", "endpoints"), ("version check ms (each worker, every 1 s)", "version_check_ms"),
                 ("full load query ms", "full_load_ms"),
                 ("idle: pool CPU ms/s", "idle_pool_cpu_ms_per_s"),
                 ("idle: postgres CPU ms/s", "idle_postgres_cpu_ms_per_s"),
                 ("one endpoint changed: pool CPU ms", "reload_pool_cpu_ms"),
                 ("postgres CPU ms", "reload_postgres_cpu_ms"), ("worker RSS MB", "worker_rss_mb"),
                 ("unknown token: pool CPU µs per request", "unknown_token_pool_cpu_us")]
BODY_COLS = [("body bytes", "bytes"), ("events/s (16 conns)", "events_per_s"), ("MB/s", "mb_per_s"),
             ("p99 ms", "p99_ms"), ("worker RSS MB", "worker_rss_mb"), ("worker peak RSS MB", "worker_hwm_mb"),
             ("CPU µs/event nginx", "cpu_us_nginx"), ("pool", "cpu_us_pool"), ("postgres", "cpu_us_postgres"),
             ("duplicates (repeated bodies)", "duplicates"), ("non-2xx", "non2xx")]


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [k for k in ("body", "endpoints", "events") if res.get(k)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, k in zip(axes[0], panels):
        rs = res[k]
        if k == "body":
            x = [r["bytes"] for r in rs]
            ax.plot(x, [r["events_per_s"] for r in rs], "o-", label="events/s")
            ax.plot(x, [r["mb_per_s"] for r in rs], "s-", label="MB/s")
            ax.plot(x, [r["worker_hwm_mb"] or 0 for r in rs], "^-", label="worker peak RSS MB")
            ax.set_xlabel("body bytes")
            ax.set_title("Body size (product, 16 TLS connections)")
        elif k == "endpoints":
            x = [r["endpoints"] for r in rs]
            ax.plot(x, [r["version_check_ms"] for r in rs], "o-", label="version check ms (every 1 s)")
            ax.plot(x, [r["full_load_ms"] for r in rs], "s-", label="full load query ms")
            ax.plot(x, [max(r["reload_pool_cpu_ms"], 0.01) for r in rs], "^-", label="reload: pool CPU ms")
            ax.plot(x, [max(r["idle_postgres_cpu_ms_per_s"], 0.01) for r in rs], "v-",
                    label="idle: postgres CPU ms/s")
            ax.set_xlabel("endpoints")
            ax.set_title("Endpoints")
        else:
            x = [max(r["rows"], 1) for r in rs]
            ax.plot(x, [r["insert_cpu_us"] for r in rs], "o-", label="ingest txn CPU µs")
            ax.plot(x, [r["poll_cpu_us"] for r in rs], "s-", label="poll(100) CPU µs")
            ax.plot([a for a, r in zip(x, rs) if r["purge_cpu_us_per_row"]],
                    [r["purge_cpu_us_per_row"] for r in rs if r["purge_cpu_us_per_row"]], "^-",
                    label="purge CPU µs per row")
            ax.plot(x, [r["poll_wall_us"] for r in rs], "s--", color="C1", alpha=0.5,
                    label="poll(100) wall µs")
            ax.plot([a for a, r in zip(x, rs) if r["purge_wall_us_per_row"]],
                    [r["purge_wall_us_per_row"] for r in rs if r["purge_wall_us_per_row"]], "^--",
                    color="C2", alpha=0.5, label="purge wall µs per row")
            ax.set_xlabel("rows in ipayout.events (0 plotted at 1)")
            ax.set_title("ipayout.events size (one backend)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write_section(res, a, machine):
    meta = res.get("_meta", {})
    L = [MARK_BEGIN, "## Cost as the work grows (bench/curves.py)", "",
         f"`bench/curves.py` on {machine}. CPU is per process "
         "(one backend's /proc/<pid>/schedstat, or the stack's process trees): it moves much "
         "less with the shared machine's load than the rates, which are from the same noisy "
         "machine and are for the shape of the curve only.", "",
         "![curves](curves.png)", ""]
    if res.get("events"):
        L += ["### ipayout.events size", "", meta.get("events", ""), "",
              "Filler rows made with generate_series (small bodies, random dedup keys, received_at "
              "over 60 days), VACUUM ANALYZE at each size; the measured events carry the fixture "
              "body; one backend, "
              f"{a.calls} calls each after a warm-up; synchronous_commit on.", "",
              table(res["events"], EVENTS_COLS), ""]
    if res.get("endpoints"):
        L += ["### Endpoints", "", meta.get("endpoints", ""), "",
              "Endpoints made with generate_series; the pool with its defaults (one worker); "
              "query times from EXPLAIN ANALYZE (planning + execution, median); idle CPU over "
              f"{a.idle} s; a change is one UPDATE of one endpoint, CPU over the next 3 s beyond idle; "
              "CPU from /proc/<pid>/task/*/schedstat of the pool's and PostgreSQL's processes "
              "(nanoseconds); unknown token: 4 TLS connections posting to a token that is not "
              "there (404), pool CPU per request.", "",
              table(res["endpoints"], ENDPOINT_COLS), ""]
    if res.get("body"):
        L += ["### Body size", "", meta.get("body", ""), "",
              "The fixture with an `items` array of copies of its `data` (compressible like real JSON), "
              "16 TLS connections, one run each (a fresh pool before each, so RSS is this size's).", "",
              table(res["body"], BODY_COLS), ""]
    L.append(MARK_END)
    return "\n".join(L) + "\n"


def replace_section(path, text):
    old = path.read_text() if path.exists() else ""
    if MARK_BEGIN in old and MARK_END in old:
        pre, rest = old.split(MARK_BEGIN, 1)
        post = rest.split(MARK_END, 1)[1].lstrip("\n")
        new = pre + text + (("\n" + post) if post else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main():
    ap = argparse.ArgumentParser(prog="bench/curves.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("curves", nargs="*", metavar="body|endpoints|events",
                    help="which curves (default: all three)")
    ap.add_argument("--max-rows", type=int, default=10_000_000)
    ap.add_argument("--calls", type=int, default=300, help="calls per measurement (300)")
    ap.add_argument("--idle", type=float, default=10, help="idle seconds measured per endpoint count (10)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (5)")
    ap.add_argument("--endpoints", default="1,1000,10000,100000", help="endpoint counts")
    ap.add_argument("--sizes", default="1000,4000,16000,64000,256000,1000000", help="body sizes")
    ap.add_argument("--keep", action="store_true", help="keep the curve_events database")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--replot", action="store_true",
                    help="measure nothing: plot bench/curves.json and rewrite the section")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    a = ap.parse_args()
    a.curves = a.curves or ["body", "endpoints", "events"]
    for c in a.curves:
        if c not in ("body", "endpoints", "events"):
            ap.error(f"unknown curve {c!r} (body, endpoints, events)")
    ba = B.parse_args(["--seed-rows", "0", "--skip", "peer", "--no-fsync-test",
                       "--duration", str(a.duration)])
    b = B.Bench(ba)
    # Only the stack: no ceiling, no seeding beyond an endpoint for bodies.
    b.state.mkdir(parents=True, exist_ok=True)
    b.out_dir.mkdir(parents=True, exist_ok=True)
    src = Path(os.environ.get("IPAYOUT_BIN", ROOT / "build" / "handler" / "ipayout-webhookd"))
    b.bin = src.resolve()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IPAYOUT_")}
    d = b.daemon_config(clean)
    b.workers, b.threads = int(d["workers"]), int(d["threads"])
    if not a.replot:
        b.stack("stop")
        b.stack("start")
        b.base_url, b.db_url = b.info["BASE_URL"], b.info["DATABASE_URL"]
        b.pg_datadir = Path(b.info["PG_LOG"]).parent / "data"
        b.psql("SET client_min_messages = warning",
               "INSERT INTO ipayout.endpoints (name, token_hash, ipayout_key, notification_url) "
               "VALUES ('bench-base', sha256('bench-base'::bytea), 'unused', 'https://unused.invalid') "
               "ON CONFLICT (name) DO NOTHING")
    res = {}
    if a.replot:
        res = json.loads((ROOT / "bench" / "curves.json").read_text())
        a.curves = []
    try:
        for k in ("body", "endpoints", "events") if not a.replot else ():
            if k in a.curves:
                log(f"curve: {k}")
                res[k] = {"body": curve_body, "endpoints": curve_endpoints, "events": curve_events}[k](b, a)
                res.setdefault("_meta", {})[k] = (
                    f"measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at commit "
                    + os.popen(f"git -C {ROOT} rev-parse --short=12 HEAD").read().strip()
                    + f" (`bench/curves.py {k}`)")
    finally:
        if not a.replot:
            b.stack("stop")
    # Curves measured earlier (bench/curves.json) stay in the section until remeasured.
    saved = ROOT / "bench" / "curves.json"
    if not a.no_write:
        old = json.loads(saved.read_text()) if saved.exists() else {}
        meta = {**old.get("_meta", {}), **res.get("_meta", {})}
        old.update(res)
        old["_meta"] = meta
        res = old
        saved.write_text(json.dumps(res, indent=1) + "\n")
    machine = f"{os.cpu_count()} cores shared with other work"
    text = write_section(res, a, machine)
    print(text)
    if not a.no_write:
        plot(res, ROOT / "bench" / "curves.png")
        replace_section(Path(a.results), text)
        log(f"wrote bench/curves.png and the curves section of {a.results}")


if __name__ == "__main__":
    main()
