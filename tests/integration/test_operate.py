"""Operating the pool: Prometheus metrics and health through nginx's loopback
operator server, and SIGHUP reloads."""
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import threading
from urllib.parse import urlparse

import pytest

from webhook import BIN, create_endpoint, fcgi, request, sign, stop_process


def metrics(stack):
    r = request(stack.info["METRICS_URL"], method="GET")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain")
    return r.body.decode()


def sample(text, name, **labels):
    """The value of one sample, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else None


def test_metrics_count_requests_events_and_batches(stack):
    ep = create_endpoint(stack, "metrics-" + uuid.uuid4().hex[:8])
    event = "METRICS.TEST." + uuid.uuid4().hex[:6].upper()
    body = json.dumps({"event": event, "eventId": str(uuid.uuid4())}).encode()
    before = metrics(stack)
    assert ep.post(body).status == 200
    assert ep.post(body).json()["status"] == "duplicate"
    assert ep.post(body, signature="x" * 44).status == 401
    after = metrics(stack)

    assert sample(after, "ipayout_requests_total", endpoint=ep.name, status=200) == 2
    # create_endpoint's visibility probe was one 401 already.
    assert (sample(after, "ipayout_requests_total", endpoint=ep.name, status=401)
            == sample(before, "ipayout_requests_total", endpoint=ep.name, status=401) + 1)
    assert sample(after, "ipayout_duplicates_total", endpoint=ep.name) == 1
    assert sample(after, "ipayout_events_total", event=event) == 1
    assert (sample(after, "ipayout_signature_failures_total", reason="invalid")
            == (sample(before, "ipayout_signature_failures_total", reason="invalid") or 0) + 1)
    assert sample(after, "ipayout_batch_size_count") >= sample(before, "ipayout_batch_size_count") + 2
    assert sample(after, "ipayout_commit_duration_seconds_bucket", le="+Inf") == \
        sample(after, "ipayout_commit_duration_seconds_count")
    # One series per worker process of the pool (the daemon's default is one).
    workers = subprocess.run(["pgrep", "-P", str(stack.pool_pid())], capture_output=True,
                             text=True).stdout.split()
    assert sorted(re.findall(r'^ipayout_db_connected\{worker="(\d+)"\}', after, re.M)) == \
        [str(w) for w in range(len(workers))]
    for worker in range(len(workers)):
        assert sample(after, "ipayout_db_connected", worker=worker) == 1
        assert sample(after, "ipayout_writer_queue_depth", worker=worker) is not None
    # Prometheus conventions: every family has HELP and TYPE, counters end in _total.
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", after, re.M):
        assert f"# HELP {m.group(1)} " in after
        if m.group(2) == "counter":
            assert m.group(1).endswith("_total")


def test_metrics_are_not_on_the_public_server(stack):
    r = request(stack.base_url + "/ipayout/metrics", method="GET", ca=stack.ca)
    assert r.status == 404


def test_health_follows_the_database(stack):
    assert request(stack.info["HEALTH_URL"], method="GET").json() == {"status": "ready"}
    stack.run("pg-stop")
    try:
        deadline = time.time() + 10
        r = request(stack.info["HEALTH_URL"], method="GET")
        while r.status == 200 and time.time() < deadline:
            time.sleep(0.2)
            r = request(stack.info["HEALTH_URL"], method="GET")
        assert r.status == 503 and r.json()["error"] == "unavailable"
    finally:
        stack.run("pg-start")
    deadline = time.time() + 10
    while time.time() < deadline:
        if request(stack.info["HEALTH_URL"], method="GET").status == 200:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("health did not come back after PostgreSQL restarted")


def test_sighup_reloads_the_config_file(stack, tmp_path):
    conf = tmp_path / "webhookd.conf"
    sock = str(tmp_path / "s.sock")
    conf.write_text(f"listen = {sock}\nworkers = 2\nthreads = 2\nlog_level = warn\n"
                    f"database = {stack.info['WORKER_DATABASE_URL']}\n")
    log = open(tmp_path / "log", "w+")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAYOUT_")}
    proc = subprocess.Popen([str(BIN), "serve", f"--config={conf}"], stdout=log, stderr=log, env=env)

    def log_text():
        log.flush()
        return Path(tmp_path / "log").read_text()

    def wait_log(s, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if s in log_text():
                return True
            time.sleep(0.05)
        return False

    try:
        deadline = time.time() + 10
        while fcgi(sock, "PUT", "/ipayout/webhooks/x").status != 405 and time.time() < deadline:
            time.sleep(0.1)
        assert "msg=request" not in log_text()  # info lines are off at warn

        conf.write_text(conf.read_text().replace("log_level = warn", "log_level = info")
                        .replace("threads = 2", "threads = 3"))
        os.kill(proc.pid, signal.SIGHUP)
        assert wait_log("settings reloaded")
        assert wait_log("setting=threads")  # not reloadable: reported, not applied
        deadline = time.time() + 10
        while "msg=request" not in log_text() and time.time() < deadline:
            fcgi(sock, "PUT", "/ipayout/webhooks/x")
            time.sleep(0.1)
        assert "msg=request" in log_text()

        conf.write_text(conf.read_text() + "workers = many\n")
        os.kill(proc.pid, signal.SIGHUP)
        assert wait_log("reload refused")
        assert fcgi(sock, "PUT", "/ipayout/webhooks/x").status == 405  # still serving
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0


def test_nginx_keeps_fastcgi_connections_open(stack):
    """The snippet's fastcgi_keep_conn on + the upstream's keepalive: requests in
    a row reuse one FastCGI connection instead of a connect/accept/close each,
    and every one of them is still answered on its own (no body of one request
    taken for the next)."""
    ep = create_endpoint(stack, "keepalive-" + uuid.uuid4().hex[:8])
    before = sample(metrics(stack), "ipayout_fastcgi_connections_total")
    ids = set()
    for i in range(40):
        # Bodies of different sizes, some past libfcgi's 8 KiB read buffer.
        body = json.dumps({"event": "KEEPALIVE.TEST", "eventId": str(uuid.uuid4()),
                           "pad": "x" * (i * 397)}).encode()
        r = ep.post(body)
        assert r.status == 200, r
        assert r.json()["status"] == "accepted"
        ids.add(r.json()["id"])
    after = sample(metrics(stack), "ipayout_fastcgi_connections_total")
    assert len(ids) == 40
    # 40 requests; the metrics scrapes go through the operator server and may
    # open a connection each. Without keepalive this would be >= 40.
    assert after - before <= 6, (before, after)


def test_batch_wait_gathers_events_into_one_commit(stack, tmp_path):
    """batch_wait_us: the writer waits (from the oldest queued event) for more
    events before committing a batch below batch_max. Eight deliveries 20 ms
    apart share one or two commits instead of one each, and every one still
    gets its own answer."""
    ep = create_endpoint(stack, "linger-" + uuid.uuid4().hex[:8])
    conf = tmp_path / "webhookd.conf"
    sock = str(tmp_path / "s.sock")
    conf.write_text(f"listen = {sock}\nworkers = 1\nthreads = 16\nbatch_wait_us = 500000\n"
                    f"log_level = warn\ndatabase = {stack.info['WORKER_DATABASE_URL']}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPAYOUT_")}
    proc = subprocess.Popen([str(BIN), "serve", f"--config={conf}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = urlparse(ep.url).path
    try:
        deadline = time.time() + 10
        while fcgi(sock, "GET", "/ipayout/health").status != 200 and time.time() < deadline:
            time.sleep(0.1)

        def batches():
            return sample(fcgi(sock, "GET", "/ipayout/metrics").body.decode(),
                          "ipayout_batch_size_count")

        before = batches()
        answers = []

        def deliver():
            body = json.dumps({"event": "LINGER.TEST", "eventId": str(uuid.uuid4())}).encode()
            ts = str(int(time.time()))
            answers.append(fcgi(sock, "POST", path, body, {
                "HTTP_X_TIMESTAMP": ts, "HTTP_X_SIGNATURE": sign(ep.key, ts, ep.url, body)}))

        senders = []
        for _ in range(8):
            senders.append(threading.Thread(target=deliver))
            senders[-1].start()
            time.sleep(0.02)
        for t in senders:
            t.join()
        assert [a.status for a in answers] == [200] * 8, answers
        assert len({a.json()["id"] for a in answers}) == 8
        # Without the wait these would be about 8 commits.
        assert batches() - before <= 2, (before, batches())
    finally:
        stop_process(proc)


# ---------------------------------------------------------------- commands

# Every ipayout-webhookd command with an option it does not take (or a word
# too many): refused with exit status 2 and a message naming it, before it
# does anything. NAME is a real endpoint, so a command that ignored the option
# would have succeeded.
REFUSED = [
    (["serve", "--frobnicate"], "unknown option --frobnicate"),
    (["--frobnicate"], "unknown option --frobnicate"),
    (["serve", "extra"], "unexpected argument 'extra'"),
    (["migrate", "--frobnicate"], "unknown option --frobnicate"),
    (["migrate", "extra"], "unexpected argument 'extra'"),
    (["show-config", "--frobnicate"], "unknown option --frobnicate"),
    (["show-config", "extra"], "unexpected argument 'extra'"),
    (["endpoint", "list", "--frobnicate"], "endpoint list: unknown option '--frobnicate'"),
    (["endpoint", "list", "extra"], "endpoint list: unexpected argument 'extra'"),
    (["endpoint", "add", "NEW", "--notification-url=https://h.example", "--key=k", "--bogus=1"],
     "endpoint add: unknown option '--bogus'"),
    (["endpoint", "disable", "NAME", "--bogus=1"], "endpoint disable: unknown option '--bogus'"),
    (["endpoint", "enable", "NAME", "--bogus"], "endpoint enable: unknown option '--bogus'"),
    (["endpoint", "set-key", "NAME", "--key=new-key", "--bogus=1"],
     "endpoint set-key: unknown option '--bogus'"),
    (["endpoint", "set-policy", "NAME", "off", "--bogus=1"],
     "endpoint set-policy: unknown option '--bogus'"),
    (["endpoint", "rotate-token", "NAME", "--notification-url=https://h.example", "--key=k"],
     "endpoint rotate-token: unknown option '--key'"),
    (["endpoint", "frobnicate"], "endpoint: unknown command 'frobnicate'"),
]


@pytest.mark.parametrize("args,message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_commands_refuse_unknown_options(stack, db, args, message):
    ep = create_endpoint(stack, "opts-" + uuid.uuid4().hex[:8])
    new_name = "opts-new-" + uuid.uuid4().hex[:8]
    args = [ep.name if a == "NAME" else new_name if a == "NEW" else a for a in args]

    def row():
        with db.cursor() as cur:
            cur.execute("SELECT enabled, ipayout_key, signature_policy, token_hash, "
                        "notification_url FROM ipayout.endpoints WHERE name = %s", (ep.name,))
            return cur.fetchone()

    before = row()
    p = subprocess.run([str(BIN), *args, f"--database={stack.database_url}"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert message in p.stderr, p.stderr
    assert p.stdout == ""
    # Refused before doing anything: the endpoint is as it was, none was added.
    assert row() == before
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM ipayout.endpoints WHERE name = %s", (new_name,))
        assert cur.fetchone()[0] == 0


def test_commands_take_their_own_options(stack, db):
    """The same commands with the options they do take still work."""
    ep = create_endpoint(stack, "opts-" + uuid.uuid4().hex[:8])
    p = stack.cli("endpoint", "set-key", ep.name, "--key", "another-key")
    assert p.returncode == 0, p.stderr
    assert stack.cli("endpoint", "set-policy", ep.name, "record").returncode == 0
    listed = stack.cli("endpoint", "list")
    assert listed.returncode == 0 and f" {ep.name} " in listed.stdout, listed.stderr
    with db.cursor() as cur:
        cur.execute("SELECT ipayout_key, signature_policy FROM ipayout.endpoints WHERE name = %s",
                    (ep.name,))
        assert cur.fetchone() == ("another-key", "record")
    shown = subprocess.run([str(BIN), "show-config", "--threads=3"], capture_output=True,
                           text=True, timeout=30)
    assert shown.returncode == 0 and "threads = 3" in shown.stdout, shown.stderr
