"""sql/006: ingest() sends the notifications itself and the trigger only runs
for inserts that do not come through it. What consumers see must be what 001
sent: one notification per inserted row, in id order, at commit, none for a
duplicate, the same payload; and inserts that bypass ingest() still notify.
(PostgreSQL folds identical notifications of one transaction into one, so a
second copy from the trigger would be invisible here: the cost of it is what
bench/ingest_cost.py measures.)"""
import json
import select
import time
import uuid

import psycopg2
import pytest


@pytest.fixture
def listener(stack):
    conn = psycopg2.connect(stack.database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("LISTEN ipayout_events")
    yield conn
    conn.close()


def notes_for(listener, endpoint_name, want, timeout=5):
    """Notifications of this endpoint, waiting until `want` arrived (then a
    moment more, so that an extra one would be seen)."""
    got, deadline = [], time.time() + timeout
    while time.time() < deadline:
        if select.select([listener], [], [], 0.2)[0]:
            listener.poll()
        for n in listener.notifies:
            p = json.loads(n.payload)
            if p["endpoint"] == endpoint_name:
                got.append((n.payload, p))
        listener.notifies.clear()
        if len(got) >= want:
            deadline = min(deadline, time.time() + 0.5)
    return got


def call_ingest(cur, endpoint_id, keys, events):
    n = len(keys)
    bodies = [json.dumps({"event": e, "eventId": k}) for e, k in zip(events, keys)]
    cur.execute(
        "SELECT ord, id, accepted FROM ipayout.ingest(%s::bigint[], %s::text[], %s::text[], "
        "%s::text[], %s::boolean[], %s::text[], %s::text[], %s::text[]) ORDER BY ord",
        ([endpoint_id] * n, events, keys, bodies, [True] * n, ["{}"] * n, ["not_checked"] * n,
         [None] * n))
    return cur.fetchall()


@pytest.mark.parametrize("batch", [1, 3])
def test_ingest_notifies_once_per_inserted_row_in_id_order(stack, endpoint, db, listener, batch):
    with db.cursor() as cur:
        cur.execute("SELECT id FROM ipayout.endpoints WHERE name = %s", (endpoint.name,))
        ep = cur.fetchone()[0]
        keys = [f"/eventId={uuid.uuid4()}" for _ in range(batch)]
        events = [f"N.{i}.\"quoted\"" for i in range(batch)]
        first = call_ingest(cur, ep, keys, events)
        assert [r[0] for r in first] == list(range(1, batch + 1))
        assert all(r[2] for r in first)
        # The same keys again, plus one new: only the new one is inserted.
        again = call_ingest(cur, ep, keys + [f"/eventId={uuid.uuid4()}"], events + ["N.new"])
    assert [(r[1], r[2]) for r in again[:batch]] == [(r[1], False) for r in first]
    assert again[batch][2] is True
    got = notes_for(listener, endpoint.name, batch + 1)
    ids = [r[1] for r in first] + [again[batch][1]]
    assert [p["id"] for _, p in got] == ids
    assert [p["event"] for _, p in got] == events + ["N.new"]
    # Byte for byte the payload 001's trigger sent.
    assert got[0][0] == '{"id":%d,"event":%s,"endpoint":%s}' % (
        ids[0], json.dumps(events[0]), json.dumps(endpoint.name))


def test_rolled_back_ingest_notifies_nothing(stack, endpoint, listener):
    conn = psycopg2.connect(stack.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM ipayout.endpoints WHERE name = %s", (endpoint.name,))
            call_ingest(cur, cur.fetchone()[0], [f"/eventId={uuid.uuid4()}"], ["N.rollback"])
        conn.rollback()
    finally:
        conn.close()
    assert notes_for(listener, endpoint.name, 1, timeout=1.5) == []


def test_insert_outside_ingest_still_notifies_once_per_row(stack, endpoint, db, listener):
    """The owner inserting by hand: the row trigger, which ingest() skips."""
    with db.cursor() as cur:
        cur.execute("SELECT id FROM ipayout.endpoints WHERE name = %s", (endpoint.name,))
        ep = cur.fetchone()[0]
        # In a session that already ran ingest(): its SET clause is undone on return.
        call_ingest(cur, ep, [f"/eventId={uuid.uuid4()}"], ["N.before"])
        cur.execute(
            "INSERT INTO ipayout.events (endpoint_id, event, dedup_key, raw_body, signature) "
            "SELECT %s, 'N.hand.' || i, 'hand-' || gen_random_uuid(), '{}', 'not_checked' "
            "FROM generate_series(1, 3) i RETURNING id", (ep,))
        hand = [r[0] for r in cur.fetchall()]
    got = notes_for(listener, endpoint.name, 4)
    assert [p["event"] for _, p in got] == ["N.before", "N.hand.1", "N.hand.2", "N.hand.3"]
    assert [p["id"] for _, p in got][1:] == sorted(hand)
