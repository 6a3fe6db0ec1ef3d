#!/usr/bin/env python3
"""Where the time goes: the product under load, sampled with perf.

    bench/profile.py [--conns 64] [--duration 10] [--env VAR=VALUE ...] [--callgraph]

Uses bench/run's stack (.run/bench; start it with bench/run first, or this
starts it), one fresh endpoint and unique signed bodies, runs wrk at --conns
connections and, in the middle of that, `perf record` (cpu-clock, this machine
has no hardware counters) on every process of the stack: nginx, the worker
pool, PostgreSQL. Prints the CPU each component used (from /proc, as bench/run
does), perf's split by process and the hottest symbols of each.
Raw perf data: .run/bench/profile/perf.data (perf report -i ... to dig).
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


COUNTED = ("raw_syscalls:sys_enter", "sched:sched_switch", "syscalls:sys_enter_futex",
           "syscalls:sys_enter_read", "syscalls:sys_enter_write", "syscalls:sys_enter_epoll_wait",
           "syscalls:sys_enter_epoll_ctl")


def count_per_component(roots, table, seconds):
    """perf stat on tracepoints, one per component at once, for `seconds`."""
    procs = {}
    for name, root in roots.items():
        pids = ",".join(str(x) for x in bench.descendants(table, root))
        procs[name] = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-e", ",".join(COUNTED), "-p", pids, "--", "sleep", str(seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    by = {}
    for name, proc in procs.items():
        _, err = proc.communicate()
        c = {}
        for line in err.splitlines():
            f = line.split(",")
            if len(f) > 2 and f[2] in COUNTED:
                c[f[2]] = float(f[0]) if f[0].replace(".", "").isdigit() else 0.0
        by[name] = c
    return {"seconds": seconds, "by": by}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--duration", type=int, default=10, help="seconds perf samples (wrk runs 6 s longer)")
    p.add_argument("--env", action="append", default=[], help="VAR=VALUE for the pool, e.g. IPAYOUT_THREADS=32")
    p.add_argument("--callgraph", action="store_true", help="record DWARF call graphs (big, slow)")
    p.add_argument("--top", type=int, default=25, help="symbols shown per component")
    p.add_argument("--frequency", type=int, default=499)
    p.add_argument("--keep-running", action="store_true", help="leave the bench stack running")
    p.add_argument("--counts", action="store_true",
                   help="also count, per component, system calls, context switches and futex "
                        "calls per answered event (perf stat on tracepoints, after the sampling)")
    a = p.parse_args()

    # Reuse bench/run's machinery with its defaults (one "variant": this profile).
    env = dict(kv.split("=", 1) for kv in a.env)
    wrk_seconds = a.duration + 6 + (a.duration // 2 + 1 if a.counts else 0)
    args = bench.parse_args(["--reps", "1", "--conns", str(a.conns), "--duration",
                             str(wrk_seconds), "--no-fsync-test", "--keep-running",
                             "--results", "/dev/null", "--command", "bench/profile.py"])
    b = bench.Bench(args)
    b.prepare()
    out = b.state / "profile"
    out.mkdir(exist_ok=True)
    ep = b.add_endpoint(f"p{b.runid}")
    b.stack("pool-stop")
    b.stack("pool-start", extra=env)
    b.wait_visible(ep["url"])
    threads = min(args.wrk_threads, a.conns)
    prefix = b.out_dir / "reqs"
    b.write_requests(prefix, ep["url"], 40000 * wrk_seconds, threads)
    b.settle()
    m0 = b.metrics()

    wrk_env = dict(os.environ, BENCH_REQS=str(prefix), BENCH_OUT=str(out / "wrk.json"),
                   BENCH_IDS=str(out / "ids"))
    wrk = subprocess.Popen(["wrk", "-t", str(threads), "-c", str(a.conns), "-d", f"{args.duration}s",
                            "--timeout", "30s", "--latency", "-s", str(bench.LUA), ep["url"]],
                           env=wrk_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    roots = b.roots()
    table = bench.proc_table()
    pids = []
    for name, root in roots.items():
        pids += [str(x) for x in bench.descendants(table, root)]
    meter = bench.Meter(roots)
    meter.start()
    rec = ["perf", "record", "-e", "cpu-clock", "-F", str(a.frequency), "-o", str(out / "perf.data"),
           "-p", ",".join(pids)]
    if a.callgraph:
        rec += ["--call-graph", "dwarf,16384"]
    subprocess.run(rec + ["--", "sleep", str(a.duration)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    cpu = meter.stop()
    counts = count_per_component(roots, table, a.duration // 2) if a.counts else None
    wout, _ = wrk.communicate()
    pool = b.metrics_delta(m0, b.metrics())
    w = bench.json.loads((out / "wrk.json").read_text())
    dur = w["duration_us"] / 1e6
    print(f"# profile: {a.conns} connections, pool env {env or '(defaults)'}")
    print(f"wrk: {w['accepted'] / dur:,.0f} accepted/s, p50 {w['lat_p50_us'] / 1000:.2f} ms, "
          f"p99 {w['lat_p99_us'] / 1000:.2f} ms, non-2xx {w['non2xx']}")
    print("CPU (cores) during the perf window: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    if pool:
        print("pool counters over the whole wrk run: " + ", ".join(f"{k} {v}" for k, v in pool.items()))
    if counts:
        rate = w["accepted"] / dur
        print(f"\n## per answered event ({counts['seconds']} s of perf stat, at {rate:,.0f} events/s)")
        print("| component | " + " | ".join(COUNTED) + " |")
        print("|---|" + "--:|" * len(COUNTED))
        for name, c in counts["by"].items():
            print(f"| {name} | " + " | ".join(f"{c[e] / (rate * counts['seconds']):.1f}" for e in COUNTED) + " |")

    def report(*extra):
        r = subprocess.run(["perf", "report", "-i", str(out / "perf.data"), "--stdio",
                            "--no-children", "--percent-limit", "0.5", *extra],
                           capture_output=True, text=True)
        return "\n".join(l for l in r.stdout.splitlines() if l and not l.startswith("#"))

    print("\n## samples by process\n" + report("--sort", "comm"))
    print("\n## samples by process and library\n" + report("--sort", "comm,dso"))
    for comm in ("ipayout-webhook", "postgres", "nginx"):
        lines = report("--comms", comm, "--sort", "dso,sym").splitlines()[:a.top]
        print(f"\n## {comm}: hottest symbols (percent of all samples)\n" + "\n".join(lines))
    for f in b.out_dir.glob("reqs.*"):
        f.unlink()
    if a.keep_running:
        b.stack("pool-stop")
        b.stack("pool-start")
    else:
        b.stop_ceiling()
        b.stack("stop")


if __name__ == "__main__":
    main()
