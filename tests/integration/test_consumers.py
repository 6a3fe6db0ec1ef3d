"""The reading side in SQL (sql/002_consumers.sql): a gap-free feed in (txid, id)
order, durable consumers with poll/ack/seek, filtering, retention, lag, and the
reader role's limits. Events are written with ipayout.ingest() (what the worker
pool calls) so a test can hold transactions open and commit them out of order.

The database is shared with the other test files: every test uses its own
consumers (unsubscribed afterwards) and its own event names or endpoint, and
never assumes the events table is empty."""
import contextlib
import json
import random
import threading
import time
import uuid

import psycopg2
import psycopg2.errors
import pytest

from webhook import create_endpoint, wait_readable


def reader_url(stack):
    """The stack's login role in ipayout_reader: what a merchant system gets."""
    return stack.info["CONSUMER_DATABASE_URL"]


def connect(url, autocommit=True):
    conn = psycopg2.connect(url)
    conn.autocommit = autocommit
    return conn


@contextlib.contextmanager
def cursor(url):
    """An autocommit cursor on a connection of its own, closed afterwards."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


@pytest.fixture(scope="module")
def endpoint_id(stack):
    """A real endpoint (made by `ipayout-webhookd endpoint add`) to ingest for."""
    ep = create_endpoint(stack, "feed-" + uuid.uuid4().hex[:10])
    with cursor(stack.database_url) as cur:
        cur.execute("SELECT id FROM ipayout.endpoints WHERE name = %s", (ep.name,))
        return cur.fetchone()[0]


@pytest.fixture
def reader(stack):
    conn = connect(reader_url(stack))
    yield conn
    conn.close()


@pytest.fixture
def consumers(stack):
    """Makes unique consumer names; removes those consumers afterwards, so that
    none is left to hold back retention for the rest of the session."""
    names = []

    def make(tag):
        names.append(f"it-{tag}-{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield make
    with cursor(stack.database_url) as cur:
        for n in names:
            cur.execute("SELECT ipayout.unsubscribe(%s)", (n,))


def ingest(cur, endpoint_id, names):
    """Inserts one event per name the way the worker does; returns their ids."""
    n = len(names)
    bodies = [json.dumps({"event": e, "eventId": str(uuid.uuid4())}) for e in names]
    cur.execute(
        "SELECT id FROM ipayout.ingest(%s::bigint[], %s::text[], %s::text[], %s::text[], "
        "%s::boolean[], %s::text[], %s::text[], %s::text[]) ORDER BY ord",
        ([endpoint_id] * n, names, [json.loads(b)["eventId"] for b in bodies], bodies,
         [True] * n, ["{}"] * n, ["not_checked"] * n, [None] * n))
    return [r[0] for r in cur.fetchall()]


def ingest_committed(stack, endpoint_id, names):
    """Ingests and commits; returns the ids once poll can return them
    (wait_readable: committed is not yet readable)."""
    conn = connect(stack.database_url)
    try:
        with conn.cursor() as cur:
            ids = ingest(cur, endpoint_id, names)
    finally:
        conn.close()
    wait_readable(stack.database_url, ids)
    return ids


def subscribe(cur, name, start="end", pattern="%"):
    cur.execute("SELECT ipayout.subscribe(%s, %s, %s)", (name, start, pattern))
    return cur.fetchone()[0]


def poll(cur, name, max_events=1000):
    """(id, event, txid) in the order poll returns them."""
    cur.execute("SELECT id, event, txid::text::numeric FROM ipayout.poll(%s, %s)",
                (name, max_events))
    return cur.fetchall()


def poll_ids(cur, name, mine=None, max_events=1000):
    ids = [r[0] for r in poll(cur, name, max_events)]
    return ids if mine is None else [i for i in ids if i in mine]


def ack(cur, name, event_id):
    cur.execute("SELECT ipayout.ack(%s, %s)", (name, event_id))


def tag():
    return uuid.uuid4().hex[:8].upper()


def poll_ids_soon(cur, name, timeout=10):
    """What poll returns once it returns anything (a just-committed event is
    readable only when every older transaction has ended); [] after timeout."""
    deadline = time.time() + timeout
    got = []
    while time.time() < deadline and not got:
        got = poll_ids(cur, name)
        time.sleep(0.05)
    return got


def test_out_of_order_commit_is_still_delivered(stack, endpoint_id, reader, consumers):
    """A lower id whose transaction commits after a higher id was read and acked
    is still delivered: feed order is (txid, id), read below the horizon."""
    c = consumers("ooo")
    t = tag()
    with reader.cursor() as r:
        subscribe(r, c, "end", f"OOO.{t}.%")
    a_conn = connect(stack.database_url, autocommit=False)
    b_conn = connect(stack.database_url, autocommit=False)
    try:
        with b_conn.cursor() as b, a_conn.cursor() as a, reader.cursor() as r:
            b.execute("SELECT pg_current_xact_id()")  # B's transaction id is the older one
            [id_a] = ingest(a, endpoint_id, [f"OOO.{t}.A"])  # A takes the lower event id ...
            [id_b] = ingest(b, endpoint_id, [f"OOO.{t}.B"])  # ... B the higher
            assert id_a < id_b
            b_conn.commit()

            # B is readable (its transaction is older than every running one) ...
            got = poll_ids_soon(r, c)
            assert got == [id_b]
            ack(r, c, id_b)
            # ... and while A is open, nothing more, however often we ask.
            assert poll_ids(r, c) == []
            a_conn.commit()

            # A naive reader that remembered "last id = id_b" would never see A.
            got = poll_ids_soon(r, c)
            assert got == [id_a]
            ack(r, c, id_a)
            assert poll_ids(r, c) == []
    finally:
        a_conn.close()
        b_conn.close()


def test_concurrent_writers_and_readers_see_every_event_once(stack, endpoint_id, consumers):
    """8 writers commit 1600 events in small transactions of random size and
    duration (some roll back), so commits come out of id order all the time.
    3 readers with their own consumers poll and ack concurrently, in three
    styles. Each must receive exactly the committed set, in feed order, with no
    event again once acked."""
    t = tag()
    pattern = f"CONC.{t}.%"
    writers, per_writer = 8, 200
    names = [consumers(f"conc{i}") for i in range(3)]
    with cursor(reader_url(stack)) as cur:
        for n in names:
            subscribe(cur, n, "end", pattern)

    committed, committed_lock = set(), threading.Lock()
    errors = []
    writers_done = threading.Event()

    def writer(w):
        rnd = random.Random(w)
        conn = connect(stack.database_url, autocommit=False)
        try:
            left = per_writer
            with conn.cursor() as cur:
                while left:
                    ids = []
                    for _ in range(rnd.randint(1, 3)):  # 1-3 ingest calls per transaction
                        k = min(left, rnd.randint(1, 4))
                        ids += ingest(cur, endpoint_id, [f"CONC.{t}.W{w}"] * k)
                        left -= k
                        time.sleep(rnd.random() * 0.004)
                        if not left:
                            break
                    if rnd.random() < 0.1:
                        conn.rollback()  # never delivered
                        left += len(ids)
                    else:
                        conn.commit()
                        with committed_lock:
                            committed.update(ids)
        except Exception as e:  # reported by the main thread
            errors.append(e)
        finally:
            conn.close()

    delivered = {n: [] for n in names}
    give_up = time.monotonic() + 90  # readers stop by themselves: never a hung session

    def reader(i, name):
        rnd = random.Random(100 + i)
        # 0: poll, work and ack in one transaction (the exactly-once recipe)
        # 1: autocommit poll, then ack
        # 2: like 1, but "crashes" now and then: drops a batch unacked, reconnects
        conn = connect(reader_url(stack), autocommit=(i != 0))
        acked_pos = None
        try:
            while True:
                if i == 2 and rnd.random() < 0.1:
                    with conn.cursor() as cur:
                        poll(cur, name, rnd.randint(1, 60))  # and never acked
                    conn.close()
                    conn = connect(reader_url(stack))
                with conn.cursor() as cur:
                    rows = poll(cur, name, rnd.randint(1, 60))
                    for event_id, _, txid in rows:
                        pos = (txid, event_id)
                        if acked_pos is not None and pos <= acked_pos:
                            errors.append(AssertionError(f"{name}: {pos} again after ack"))
                        acked_pos = pos
                        delivered[name].append(event_id)
                    if rows:
                        ack(cur, name, rows[-1][0])
                    if i == 0:
                        conn.commit()
                if not rows:
                    with committed_lock:
                        done = writers_done.is_set() and set(delivered[name]) >= committed
                    if done or errors or time.monotonic() > give_up:
                        return
                    time.sleep(0.005)
        except Exception as e:
            errors.append(e)
        finally:
            conn.close()

    naive_seen = set()

    def naive_reader():
        """What this feed exists to prevent: WHERE id > last_id skips an event whose
        transaction commits after a higher id was read."""
        conn = connect(reader_url(stack))
        last = 0
        try:
            with conn.cursor() as cur:
                while True:
                    finished = writers_done.is_set()
                    cur.execute("SELECT id FROM ipayout.events WHERE event LIKE %s AND id > %s "
                                "ORDER BY id", (pattern, last))
                    for (event_id,) in cur.fetchall():
                        naive_seen.add(event_id)
                        last = event_id
                    if finished:
                        return
                    time.sleep(0.001)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    readers = [threading.Thread(target=reader, args=(i, n)) for i, n in enumerate(names)]
    readers.append(threading.Thread(target=naive_reader))
    for th in threads + readers:
        th.start()
    for th in threads:
        th.join(120)
    writers_done.set()
    for th in readers:
        th.join(120)
    assert not any(th.is_alive() for th in threads + readers), "a thread did not finish"
    assert not errors, errors[:5]
    missed = committed - naive_seen
    print(f"committed {len(committed)}; the naive reader missed {len(missed)}")
    assert missed, "no commit out of id order happened: this test proved nothing"
    assert len(committed) > writers * per_writer * 0.5
    for name in names:
        got = delivered[name]
        assert len(got) == len(set(got)), f"{name}: an event delivered twice"
        assert set(got) == committed, f"{name}: missing {sorted(committed - set(got))[:10]}"


def test_restart_resumes_where_acked(stack, endpoint_id, consumers):
    c = consumers("restart")
    t = tag()
    with cursor(reader_url(stack)) as cur:
        subscribe(cur, c, "end", f"RST.{t}.%")
    ids = ingest_committed(stack, endpoint_id, [f"RST.{t}.E"] * 5)

    first = connect(reader_url(stack))
    with first.cursor() as cur:
        assert poll_ids(cur, c) == ids
        ack(cur, c, ids[2])  # processed three, then "crashed"
    first.close()

    again = connect(reader_url(stack))
    try:
        with again.cursor() as cur:
            assert poll_ids(cur, c) == ids[3:]  # unacked ones again, acked ones never
            ack(cur, c, ids[4])
            assert poll_ids(cur, c) == []
            ack(cur, c, ids[1])  # a late, repeated ack moves nothing back
            assert poll_ids(cur, c) == []
    finally:
        again.close()


def test_subscribe_from_end_beginning_or_time(stack, endpoint_id, reader, consumers):
    t = tag()
    pattern = f"SUB.{t}.%"
    [e1] = ingest_committed(stack, endpoint_id, [f"SUB.{t}.1"])
    time.sleep(0.05)
    with reader.cursor() as cur:
        cur.execute("SELECT clock_timestamp()")
        between = cur.fetchone()[0]
    time.sleep(0.05)
    [e2] = ingest_committed(stack, endpoint_id, [f"SUB.{t}.2"])
    c_end, c_beg, c_time = consumers("end"), consumers("beg"), consumers("time")
    with reader.cursor() as cur:
        assert subscribe(cur, c_end, "end", pattern) is True
        assert subscribe(cur, c_beg, "beginning", pattern) is True
        assert subscribe(cur, c_time, between.isoformat(), pattern) is True
        assert subscribe(cur, c_end, "beginning", "%") is False  # exists: left as it is
    [e3] = ingest_committed(stack, endpoint_id, [f"SUB.{t}.3"])
    with reader.cursor() as cur:
        assert poll_ids(cur, c_end) == [e3]
        assert poll_ids(cur, c_beg) == [e1, e2, e3]
        assert poll_ids(cur, c_time) == [e2, e3]
        with pytest.raises(psycopg2.errors.UndefinedObject):
            poll(cur, "it-no-such-consumer-" + t)


def test_filtering_keeps_position_semantics(stack, endpoint_id, reader, consumers):
    """A 'PAYMENT.%' consumer sees payments only, but its position is in the one
    feed: acking a payment moves it past the non-matching events before it."""
    c = consumers("filter")
    with reader.cursor() as cur:
        subscribe(cur, c, "end", "PAYMENT.%")
    ids = ingest_committed(stack, endpoint_id, ["PAYMENT.CREATED", "TRANSFER.CREATED",
                                                 "PAYMENT.COMPLETED", "CUSTOMER.CREATED",
                                                 "PAYMENT.STATUS.UPDATED"])
    p1, t1, p2, x1, p3 = ids
    mine = set(ids)
    with reader.cursor() as cur:
        assert poll_ids(cur, c, mine) == [p1, p2, p3]
        ack(cur, c, p2)
        cur.execute("SELECT position_id FROM ipayout.consumers WHERE name = %s", (c,))
        assert cur.fetchone()[0] == p2
        assert poll_ids(cur, c, mine) == [p3]
        cur.execute("SELECT pending FROM ipayout.consumer_status() WHERE consumer = %s", (c,))
        assert cur.fetchone()[0] >= 1  # p3 (x1 does not match, so it is not pending)
        ack(cur, c, p3)
        cur.execute("SELECT pending FROM ipayout.consumer_status() WHERE consumer = %s", (c,))
        assert cur.fetchone()[0] == 0
        # Acking a non-matching event is allowed and moves the position too.
        [t2] = ingest_committed(stack, endpoint_id, ["TRANSFER.CREATED"])
        [p4] = ingest_committed(stack, endpoint_id, ["PAYMENT.CREATED"])
        ack(cur, c, t2)
        assert poll_ids(cur, c, mine | {t2, p4}) == [p4]


def test_seek_by_id_and_by_time_replays(stack, endpoint_id, reader, consumers):
    c = consumers("seek")
    t = tag()
    with reader.cursor() as cur:
        subscribe(cur, c, "end", f"SEEK.{t}.%")
    ids = []
    for i in range(4):
        ids += ingest_committed(stack, endpoint_id, [f"SEEK.{t}.{i}"])
        time.sleep(0.02)
    with reader.cursor() as cur:
        assert poll_ids(cur, c) == ids
        ack(cur, c, ids[-1])
        assert poll_ids(cur, c) == []

        cur.execute("SELECT ipayout.seek(%s, %s::bigint)", (c, ids[1]))
        assert poll_ids(cur, c) == ids[1:]
        ack(cur, c, ids[-1])

        cur.execute("SELECT received_at FROM ipayout.events WHERE id = %s", (ids[2],))
        at = cur.fetchone()[0]
        cur.execute("SELECT ipayout.seek(%s, %s::timestamptz)", (c, at))
        assert poll_ids(cur, c) == ids[2:]

        # Forward too: a time after everything means "from the end".
        cur.execute("SELECT ipayout.seek(%s, now() + interval '1 hour')", (c,))
        assert poll_ids(cur, c) == []
        with pytest.raises(psycopg2.errors.NoDataFound):
            cur.execute("SELECT ipayout.seek(%s, %s::bigint)", (c, -1))



def test_unknown_consumer_is_one_error(stack, endpoint_id, reader, consumers):
    """ack and both seeks name a missing consumer the same way (SQLSTATE 42704,
    one message); a missing event is reported first, as before."""
    [e] = ingest_committed(stack, endpoint_id, [f"NOCONS.{tag()}"])
    missing = "it-no-such-consumer-" + tag()
    calls = [("SELECT ipayout.ack(%s, %s)", (missing, e)),
             ("SELECT ipayout.seek(%s, %s::bigint)", (missing, e)),
             ("SELECT ipayout.seek(%s, %s::timestamptz)", (missing, "-infinity")),
             ("SELECT ipayout.seek(%s, %s::timestamptz)", (missing, "infinity"))]
    for sql, params in calls:
        with reader.cursor() as cur:
            with pytest.raises(psycopg2.errors.UndefinedObject) as err:
                cur.execute(sql, params)
        assert err.value.diag.message_primary == f'no consumer named "{missing}"', sql
    for sql in ("SELECT ipayout.ack(%s, %s)", "SELECT ipayout.seek(%s, %s::bigint)"):
        with reader.cursor() as cur:
            with pytest.raises(psycopg2.errors.NoDataFound) as err:
                cur.execute(sql, (missing, -1))
        assert err.value.diag.message_primary == "no event with id -1", sql
    # An ack at or before an existing consumer's position is no error.
    c = consumers("known")
    with reader.cursor() as cur:
        subscribe(cur, c, "end")
        cur.execute("SELECT ipayout.ack(%s, %s)", (c, e))
        assert cur.fetchone()[0] == e

def test_retention_never_removes_unacked_events(stack, endpoint_id, db, consumers):
    c = consumers("retention")
    t = tag()
    with db.cursor() as cur:
        # Consumers left behind by an interrupted earlier run of these tests
        # (the test cluster outlives a session) would hold everything back.
        cur.execute("SELECT ipayout.unsubscribe(name) FROM ipayout.consumers "
                    "WHERE name LIKE %s AND created_at < now() - interval '30 minutes'",
                    ("it-%",))
        subscribe(cur, c, "end", f"RET.{t}.%")
    old = ingest_committed(stack, endpoint_id, [f"RET.{t}.OLD"] * 4)
    [recent] = ingest_committed(stack, endpoint_id, [f"RET.{t}.NEW"])
    with db.cursor() as cur:
        cur.execute("UPDATE ipayout.events SET received_at = now() - interval '40 days' "
                    "WHERE id = ANY(%s)", (old,))

        def remaining():
            cur.execute("SELECT id FROM ipayout.events WHERE id = ANY(%s) ORDER BY id",
                        (old + [recent],))
            return [r[0] for r in cur.fetchall()]

        cur.execute("SELECT ipayout.purge('30 days')")
        assert remaining() == old + [recent]  # nothing acked: nothing removed

        ack(cur, c, old[1])
        purged = []
        while True:  # one batch (here: one event) per call, each a short transaction
            cur.execute("SELECT ipayout.purge('30 days', false, 1)")
            purged.append(cur.fetchone()[0])
            if purged[-1] < 1:
                break
        assert sum(purged) >= 2 and max(purged) == 1
        assert remaining() == old[2:] + [recent]  # the acked old ones went

        cur.execute("SELECT ipayout.purge('30 days', true)")
        assert remaining() == [recent]  # forced: unacked old ones too, never recent ones
        assert poll_ids(cur, c) == [recent]


def test_consumer_status_lag_and_pending(stack, endpoint_id, reader, db, consumers):
    c = consumers("status")
    t = tag()
    with reader.cursor() as cur:
        subscribe(cur, c, "end", f"LAG.{t}.%")
    ids = ingest_committed(stack, endpoint_id, [f"LAG.{t}.E"] * 3)
    with db.cursor() as cur:
        cur.execute("UPDATE ipayout.events SET received_at = now() - interval '1 hour' "
                    "WHERE id = %s", (ids[0],))

    def status():
        with reader.cursor() as cur:
            cur.execute("SELECT pending, extract(epoch FROM lag), position_id, acked_at "
                        "FROM ipayout.consumer_status() WHERE consumer = %s", (c,))
            return cur.fetchone()

    pending, lag, _, acked_at = status()
    assert pending == 3 and 3590 < lag < 3700 and acked_at is None
    with reader.cursor() as cur:
        ack(cur, c, ids[0])
    pending, lag, position, acked_at = status()
    assert pending == 2 and 0 <= lag < 60 and position == ids[0] and acked_at is not None
    with reader.cursor() as cur:
        ack(cur, c, ids[2])
    pending, lag, position, _ = status()
    assert pending == 0 and lag is None and position == ids[2]


def test_reader_role_reads_and_consumes_but_cannot_write_or_see_secrets(
        stack, endpoint_id, reader, consumers):
    c = consumers("role")
    t = tag()
    [e] = ingest_committed(stack, endpoint_id, [f"ROLE.{t}"])
    with reader.cursor() as cur:
        cur.execute("SELECT event FROM ipayout.events WHERE id = %s", (e,))
        assert cur.fetchone()[0] == f"ROLE.{t}"
        cur.execute("SELECT id, name, enabled FROM ipayout.endpoints WHERE id = %s",
                    (endpoint_id,))
        assert cur.fetchone()[0] == endpoint_id
        subscribe(cur, c, "beginning", f"ROLE.{t}")
        assert poll_ids(cur, c) == [e]
        ack(cur, c, e)
        cur.execute("SELECT ipayout.feed_horizon(), count(*) FROM ipayout.consumer_status()")
        cur.execute("SELECT count(*) FROM ipayout.read_after('0', 0, 1)")

    forbidden = [
        ("INSERT INTO ipayout.events (endpoint_id, event, dedup_key, raw_body, signature) "
         "VALUES (%s, 'X', 'x', '{}', 'valid')", (endpoint_id,)),
        ("UPDATE ipayout.events SET event = 'X' WHERE id = %s", (e,)),
        ("DELETE FROM ipayout.events WHERE id = %s", (e,)),
        ("UPDATE ipayout.consumers SET position_id = 0 WHERE name = %s", (c,)),
        ("SELECT * FROM ipayout.ingest(ARRAY[%s]::bigint[], '{X}', '{x}', '{\"{}\"}', '{t}', "
         "'{\"{}\"}', '{valid}', '{NULL}')", (endpoint_id,)),
        ("SELECT ipayout.purge('0 seconds', true)", ()),
        # seek's internals: a reader moves a consumer only through seek and ack.
        ("SELECT ipayout.set_consumer_position(%s, '0', 0)", (c,)),
        ("SELECT ipayout.raise_no_consumer(%s)", (c,)),
        ("SELECT ipayout.event_txid(%s)", (e,)),
        ("SELECT ipayout_key FROM ipayout.endpoints", ()),
        ("SELECT token_hash FROM ipayout.endpoints", ()),
        ("SELECT notification_url FROM ipayout.endpoints", ()),
        ("SELECT * FROM ipayout.endpoints", ()),
    ]
    for sql, params in forbidden:
        with reader.cursor() as cur:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(sql, params)
