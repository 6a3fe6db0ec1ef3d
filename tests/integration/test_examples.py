"""The consumers in examples/ are what a merchant copies: each is shown in
docs/consumers.md verbatim, and each runs here against the real stack, with
events posted through nginx."""
import json
import os
import shutil
import signal
import subprocess
import threading
import uuid

import psycopg2
import pytest

from webhook import ROOT, post_event, stop_process, unsubscribe, wait_for_consumer, wait_readable

EXAMPLES = ROOT / "examples"
NODE_DIR = EXAMPLES / "node"



def fenced_blocks(markdown):
    """The contents of the ``` code blocks of a Markdown text, each as the text
    of a file (every line ends with a newline)."""
    blocks, current = [], None
    for line in markdown.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("".join(l + "\n" for l in current))
                current = None
        elif current is not None:
            current.append(line)
    assert current is None, "an unclosed code block"
    return blocks


@pytest.mark.parametrize("path", ["consumer.sql", "consumer.py", "node/consumer.js",
                                  "node/package.json"])
def test_docs_show_the_example_verbatim(path):
    # A whole code block equal to the whole file: not a fragment of it, and not
    # the file inside a longer block.
    blocks = fenced_blocks((ROOT / "docs" / "consumers.md").read_text())
    assert (EXAMPLES / path).read_text() in blocks, \
        f"docs/consumers.md has no code block equal to examples/{path}"


def post_events(endpoint, events):
    """Payments as the examples expect them (data.paymentId, data.status)."""
    return [post_event(endpoint, event, data={"paymentId": "PAY-" + uuid.uuid4().hex[:8],
                                              "status": "Completed"})[0]
            for event in events]


def test_psql_example_applies_each_event_exactly_once(stack, endpoint, db):
    consumer = "merchant-payments"  # the name in examples/consumer.sql
    with db.cursor() as cur:
        # A clean slate: the test cluster outlives a session.
        cur.execute("SELECT ipayout.unsubscribe(%s)", (consumer,))
        cur.execute("DROP TABLE IF EXISTS merchant_payment_log")
        # Start at the end instead of the beginning, so the run below has only
        # this test's events to apply (subscribe leaves an existing consumer be).
        cur.execute("SELECT ipayout.subscribe(%s, 'end', 'PAYMENT.%%')", (consumer,))

    def run_example():
        return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f",
                               str(EXAMPLES / "consumer.sql"), stack.database_url],
                              capture_output=True, text=True, timeout=60)

    def applied():
        with db.cursor() as cur:
            cur.execute("SELECT event_id FROM merchant_payment_log ORDER BY event_id")
            return [r[0] for r in cur.fetchall()]

    try:
        payments = post_events(endpoint, ["PAYMENT.CREATED", "PAYMENT.COMPLETED"])
        transfer = post_events(endpoint, ["TRANSFER.CREATED"])  # filtered out by the pattern
        wait_readable(stack.database_url, payments + transfer)
        p = run_example()
        assert p.returncode == 0, p.stderr
        assert applied() == payments
        with db.cursor() as cur:
            cur.execute("SELECT count(*) FROM merchant_payment_log WHERE payment_id LIKE 'PAY-%%' "
                        "AND status = 'Completed'")
            assert cur.fetchone()[0] == 2
        assert run_example().returncode == 0
        assert applied() == payments  # again: nothing new, nothing twice

        # Two copies at once: poll locks the consumer, so one waits for the other.
        more = post_events(endpoint, ["PAYMENT.STATUS.UPDATED"] * 5)
        wait_readable(stack.database_url, more)
        results = [None, None]

        def run(i):
            results[i] = run_example()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(90)
        assert all(r is not None and r.returncode == 0 for r in results), results
        assert applied() == payments + more
    finally:
        unsubscribe(stack, consumer)
        with db.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS merchant_payment_log")


def run_listener(stack, endpoint, cmd, consumer, env, cwd=None):
    """Starts an example that exits after 3 events, posts 3, returns its lines."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(os.environ, **env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_consumer(stack, consumer, proc, timeout=20)
        ids = post_events(endpoint, ["PAYMENT.COMPLETED", "TRANSFER.CREATED", "PAYMENT.CREATED"])
        out, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, err
        lines = [json.loads(line) for line in out.split("\n") if line]
        assert [int(o["id"]) for o in lines] == ids
        assert [o["event"] for o in lines] == ["PAYMENT.COMPLETED", "TRANSFER.CREATED",
                                               "PAYMENT.CREATED"]
        assert all(o["payload"]["data"]["paymentId"].startswith("PAY-") for o in lines)
        # All acked: the consumer has nothing pending.
        with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT pending FROM ipayout.consumer_status() WHERE consumer = %s",
                        (consumer,))
            assert cur.fetchone()[0] == 0
        conn.close()
    finally:
        stop_process(proc, signal.SIGKILL)
        unsubscribe(stack, consumer)


def test_python_example_receives_events(stack, endpoint):
    consumer = "it-py-" + uuid.uuid4().hex[:10]
    run_listener(stack, endpoint,
                 ["/usr/bin/python3", str(EXAMPLES / "consumer.py"), "--consumer", consumer,
                  "--max-events", "3", "--timeout", "30"],
                 consumer, {"DATABASE_URL": stack.info["CONSUMER_DATABASE_URL"]})


def test_node_example_receives_events(stack, endpoint):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/lib.sh installs Debian's nodejs and npm)")
    if not (NODE_DIR / "node_modules" / "pg").is_dir():
        npm = shutil.which("npm")
        assert npm, "node is here but npm is not: cannot install examples/node's dependencies"
        p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
    consumer = "it-node-" + uuid.uuid4().hex[:10]
    run_listener(stack, endpoint, [node, "consumer.js"], consumer,
                 {"DATABASE_URL": stack.info["CONSUMER_DATABASE_URL"],
                  "IPAYOUT_CONSUMER": consumer, "MAX_EVENTS": "3", "TIMEOUT_SECONDS": "30"},
                 cwd=NODE_DIR)
