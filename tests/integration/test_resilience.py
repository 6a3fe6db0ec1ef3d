"""Outages and shutdown: 503 while PostgreSQL is down, recovery, and a SIGTERM
drain under load that loses no acknowledged event. Runs after test_ingest."""
import json
import os
import signal
import threading
import time
import uuid

import pytest

from webhook import create_endpoint


def unique_body(tag=""):
    return json.dumps({"event": "PAYMENT.CREATED", "eventId": f"{tag}{uuid.uuid4()}"}).encode()


def test_503_while_postgres_is_down_then_200(stack, db):
    ep = create_endpoint(stack, "outage-" + uuid.uuid4().hex[:8])
    assert ep.post(unique_body()).status == 200
    db.close()
    stack.run("pg-stop")
    try:
        r = ep.post(unique_body())
        assert r.status == 503, r
        assert r.json()["error"] == "unavailable"
        assert int(r.headers["retry-after"]) > 0
    finally:
        stack.run("pg-start")
    started = time.time()
    status = None
    while time.time() - started < 15:
        status = ep.post(unique_body()).status
        if status == 200:
            break
        time.sleep(0.1)
    print(f"recovered {time.time() - started:.2f}s after pg-start returned")
    assert status == 200


def test_pool_starts_while_postgres_is_down(stack):
    ep = create_endpoint(stack, "cold-" + uuid.uuid4().hex[:8])
    stack.run("pool-stop")
    stack.run("pg-stop")
    try:
        stack.run("pool-start")
        r = ep.post(unique_body())
        assert r.status == 503, r
        assert "retry-after" in r.headers
    finally:
        stack.run("pg-start")
    deadline = time.time() + 15
    status = None
    while time.time() < deadline:
        status = ep.post(unique_body()).status
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200


def test_sigterm_under_load_loses_no_acknowledged_event(stack):
    import psycopg2
    ep = create_endpoint(stack, "drain-" + uuid.uuid4().hex[:8])
    acked, failed, sent = [], [], [0]
    stop = threading.Event()
    lock = threading.Lock()

    def sender(n):
        while not stop.is_set():
            event_id = f"drain-{n}-{uuid.uuid4()}"
            body = json.dumps({"event": "PAYMENT.CREATED", "eventId": event_id}).encode()
            try:
                r = ep.post(body)
                ok = r.status == 200
            except OSError:
                ok = False
            with lock:
                sent[0] += 1
                (acked if ok else failed).append(event_id)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        pid = stack.pool_pid()
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("pool did not exit within 20 s of SIGTERM")
        time.sleep(0.5)
    finally:  # the senders must stop whatever happened, or pytest never exits
        stop.set()
        for t in threads:
            t.join()
    assert "pool stopped" in stack.log()
    stack.run("pool-start")

    conn = psycopg2.connect(stack.database_url)
    with conn.cursor() as cur:
        cur.execute("SELECT raw_body::jsonb->>'eventId' FROM ipayout.events e "
                    "JOIN ipayout.endpoints p ON p.id = e.endpoint_id WHERE p.name = %s", (ep.name,))
        stored = [r[0] for r in cur.fetchall()]
    conn.close()
    print(f"sent={sent[0]} acked={len(acked)} failed={len(failed)} stored={len(stored)}")
    assert len(acked) > 50
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert len(stored) == len(set(stored))
