"""Helpers for the integration tests: the i-payout signature, an HTTPS client for
the stack's nginx, the stack control script, FastCGI straight to a pool, posting
events and waiting for readers. Nothing here fakes a server."""
import base64
import hashlib
import hmac
import http.client
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack"
FIXTURES = ROOT / "tests" / "fixtures"
# IPAYOUT_BIN: the binary under test (scripts/stack honours the same variable).
BIN = Path(os.environ.get("IPAYOUT_BIN", ROOT / "build" / "handler" / "ipayout-webhookd"))
# The events CLI from the same build tree as BIN.
EVENTS_BIN = Path(os.environ.get("IPAYOUT_EVENTS_BIN", BIN.parent.parent / "cli" / "ipayout-events"))


def sign(key: str, timestamp: str, url: str, body: bytes) -> str:
    """docs/ipayout.md: base64(HMAC-SHA256(key, SHA-256("<ts>#<url>#<body>")))."""
    digest = hashlib.sha256(timestamp.encode() + b"#" + url.encode() + b"#" + body).digest()
    return base64.b64encode(hmac.new(key.encode(), digest, hashlib.sha256).digest()).decode()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:200]!r}>"


def request(url, method="POST", body=b"", headers=None, ca=None, timeout=30, source=None):
    """One request on a new connection; `source`: the local address to connect
    from (any of 127.0.0.0/8), as another client host would."""
    u = urllib.parse.urlsplit(url)
    src = (source, 0) if source else None
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=timeout,
                                           source_address=src)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout, source_address=src)
    path = u.path + (("?" + u.query) if u.query else "")
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def run_stack(env, *args, timeout=180):
    """scripts/stack ARGS with `env`: its KEY=VALUE lines (start, env) as a
    dict. Raises with the command's output when it fails."""
    p = subprocess.run([str(STACK), *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"scripts/stack {' '.join(args)} failed ({p.returncode}):\n"
                           f"{p.stdout}\n{p.stderr}")
    pairs = (line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    return {k: v for k, v in pairs if k.isupper()}


def process_alive(pid):
    """Alive and not a zombie (this machine's pid 1 may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Stack:
    """The real stack (PostgreSQL, worker pool, nginx) run by scripts/stack in
    its own state directory and ports, so tests never touch a developer's stack."""

    def __init__(self, state_dir, pg_port, https_port):
        # The pool runs with the daemon's defaults, as a merchant's does: no
        # IPAYOUT_<SETTING> of the caller's environment reaches it. A test that
        # needs other settings restarts the pool with them (test_faults.pool_with).
        harness = ("IPAYOUT_BIN", "IPAYOUT_EVENTS_BIN", "IPAYOUT_TEST_", "IPAYOUT_FAULTS_")
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("IPAYOUT_") or k.startswith(harness)}
        self.env.update(IPAYOUT_STATE_DIR=str(state_dir), IPAYOUT_PG_PORT=str(pg_port),
                        IPAYOUT_HTTPS_PORT=str(https_port))
        self.info = {}

    def run(self, *args, timeout=180):
        self.info.update(run_stack(self.env, *args, timeout=timeout))

    @property
    def base_url(self):
        return self.info["BASE_URL"]

    @property
    def database_url(self):
        return self.info["DATABASE_URL"]

    @property
    def ca(self):
        return self.info.get("CA_CERT")

    def pool_pid(self):
        return int(Path(self.info["STATE_DIR"], "webhookd.pid").read_text().strip())

    def log(self):
        return Path(self.info["STATE_DIR"], "webhookd.log").read_text(errors="replace")

    def cli(self, *args, input=None):
        p = subprocess.run([str(BIN), *args, f"--database={self.database_url}"],
                           capture_output=True, text=True, input=input, timeout=60)
        return p


class Endpoint:
    def __init__(self, stack, name, key, policy, url):
        self.stack, self.name, self.key, self.policy, self.url = stack, name, key, policy, url

    def post(self, body: bytes, ts=None, signature=None, content_type="application/json",
             extra_headers=None, url=None, method="POST", sign_url=None, source=None, timeout=30):
        ts = str(int(time.time())) if ts is None else ts
        headers = {"Content-Type": content_type} if content_type else {}
        if ts is not False:
            headers["x-timestamp"] = ts
        if signature is None:
            signature = sign(self.key, ts, sign_url or self.url, body)
        if signature is not False:
            headers["x-signature"] = signature
        headers.update(extra_headers or {})
        return request(url or self.url, method=method, body=body, headers=headers,
                       ca=self.stack.ca, source=source, timeout=timeout)


def create_endpoint(stack, name, key="pk_test_3f9a1c", policy="required"):
    p = stack.cli("endpoint", "add", name, f"--notification-url={stack.base_url}",
                  f"--key={key}", f"--policy={policy}")
    assert p.returncode == 0, p.stderr
    url = p.stdout.strip()
    created = time.time()
    ep = Endpoint(stack, name, key, policy, url)
    # Each worker process picks endpoint changes up within endpoint_refresh_ms
    # (1 s) on its own schedule: one worker answering is not all of them, so
    # wait for one, then for a whole refresh interval after the creation.
    deadline = created + 10
    while time.time() < deadline:
        if ep.post(b"{}", signature="x").status != 404:
            time.sleep(max(0.0, created + 1.2 - time.time()))
            return ep
        time.sleep(0.1)
    raise AssertionError(f"endpoint {name} never became visible to the workers")


def post_event(endpoint, event="PAYMENT.COMPLETED", event_id=None, **fields):
    """One delivery through nginx that must be stored (200). Returns the stored
    id and the body sent."""
    body = {"event": event, "eventId": event_id or str(uuid.uuid4()), **fields}
    r = endpoint.post(json.dumps(body).encode())
    assert r.status == 200, r
    return r.json()["id"], body


# psycopg2 is imported where it is used: bench/wakeup_latency.py imports this
# module for sign() alone.

def wait_readable(database_url, ids, timeout=10):
    """Committed is not yet readable: an event waits until every older writing
    transaction has ended (an autoanalyze, for one, holds a transaction id for
    a moment). Reads that must see just-posted events wait for that first."""
    import psycopg2
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    deadline = time.time() + timeout
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT bool_and(txid < ipayout.feed_horizon()) FROM ipayout.events "
                            "WHERE id = ANY(%s)", (list(ids),))
                if cur.fetchone()[0]:
                    return
                assert time.time() < deadline, f"events {ids} never became readable"
                time.sleep(0.02)
    finally:
        conn.close()


def wait_for_consumer(stack, name, proc=None, timeout=10):
    """Readers (the CLI, the examples) subscribe once LISTEN is in place: from
    the moment their consumer exists, an event posted wakes them. `proc`, the
    reader's process, must not exit meanwhile."""
    import psycopg2
    conn = psycopg2.connect(stack.database_url)
    conn.autocommit = True
    try:
        deadline = time.time() + timeout
        with conn.cursor() as cur:
            while time.time() < deadline:
                assert proc is None or proc.poll() is None, proc.communicate(timeout=5)
                cur.execute("SELECT 1 FROM ipayout.consumers WHERE name = %s", (name,))
                if cur.fetchone():
                    return
                time.sleep(0.05)
    finally:
        conn.close()
    raise AssertionError(f"consumer {name} never appeared")


def unsubscribe(stack, name):
    """Removes a test's consumer, so that none is left to hold back retention."""
    import psycopg2
    conn = psycopg2.connect(stack.database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ipayout.unsubscribe(%s)", (name,))
    finally:
        conn.close()


def stop_process(proc, sig=signal.SIGTERM, timeout=15):
    """Asks a process the test started to exit with `sig`, kills it if it is
    still there after `timeout` seconds, and reaps it; returns its exit code.
    For finally blocks: a test never leaves a process behind."""
    if proc.poll() is None and sig != signal.SIGKILL:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    return proc.returncode


# ---------------------------------------------------------------- FastCGI

class FcgiResponse:
    """A response as cgi-fcgi prints it (CGI headers, a blank line, the body)."""

    def __init__(self, raw: bytes):
        self.text = raw.decode(errors="replace")
        head, _, self.body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        self.headers = {}
        for line in head.decode(errors="replace").splitlines():
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.status = int(self.headers.get("status", "0").split()[0] or 0)

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:200]!r}>"


def fcgi(sock, method, path, body=b"", headers=None, timeout=30):
    """One request straight to a pool's socket (no nginx) with libfcgi's
    cgi-fcgi, with the FastCGI parameters nginx/ipayout-webhook.conf sets.
    headers: more parameters (HTTP_X_SIGNATURE, ...)."""
    env = {"PATH": os.environ["PATH"], "REQUEST_METHOD": method, "DOCUMENT_URI": path,
           "REQUEST_URI": path, "QUERY_STRING": "", "REMOTE_ADDR": "127.0.0.1",
           "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "https", "HTTPS": "on",
           "CONTENT_TYPE": "application/json" if body else "",
           "CONTENT_LENGTH": str(len(body)) if body else ""}
    env.update(headers or {})
    p = subprocess.run(["cgi-fcgi", "-bind", "-connect", str(sock)], env=env, input=body,
                       capture_output=True, timeout=timeout)
    return FcgiResponse(p.stdout)
