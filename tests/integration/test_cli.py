"""ipayout-events (cli/) against the real stack: events posted through nginx
reach `tail` as JSON lines; `tail --follow` wakes on LISTEN, survives a killed
connection and resumes a consumer after a restart without repeating acked
lines. Every subprocess is bounded: stopped (then killed) in a finally."""
import json
import os
import queue
import signal
import subprocess
import threading
import time
import uuid

import psycopg2
import pytest

from webhook import (EVENTS_BIN, post_event, stop_process, unsubscribe, wait_for_consumer,
                     wait_readable)

CLI = EVENTS_BIN
FIELDS = {"id", "event", "endpoint", "received_at", "dedup_key", "signature", "payload"}



def cli(stack, *args, timeout=30):
    return subprocess.run([str(CLI), *args, "--database", stack.info["CONSUMER_DATABASE_URL"]],
                          capture_output=True, text=True, timeout=timeout)


def json_lines(stdout):
    """One object per line. Not splitlines(): it also splits at U+2028, which
    JSON allows unescaped inside strings."""
    return [json.loads(line) for line in stdout.split("\n") if line]


def mentions(line, endpoint):
    return f'"endpoint":"{endpoint.name}"' in line


class Tail:
    """`ipayout-events tail` as a subprocess; its stdout lines land in a queue
    (with the time they were read) so a test can wait for one with a timeout."""

    def __init__(self, stack, *args, database=None):
        self.stderr_path = stack.info["STATE_DIR"] + f"/cli-{uuid.uuid4().hex[:8]}.stderr"
        self.stderr = open(self.stderr_path, "w+")
        self.proc = subprocess.Popen(
            [str(CLI), "tail", *args, "--database",
             database or stack.info["CONSUMER_DATABASE_URL"]],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line))
        self.lines.put((time.monotonic(), None))

    def next_line(self, timeout=10):
        """The next line as text, or an AssertionError after timeout."""
        try:
            _, line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s; stderr:\n{self.errors()}")
        assert line is not None, f"tail exited ({self.proc.poll()}); stderr:\n{self.errors()}"
        return line

    def next_for(self, endpoint, timeout=10):
        """The next line of this endpoint's events, parsed. Other events are
        skipped unparsed (other tests store JSON nested deeper than json.loads
        goes)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(deadline - time.monotonic(), 0.01))
            if mentions(line, endpoint):
                obj = json.loads(line)
                assert obj["endpoint"] == endpoint.name, line
                return obj

    def assert_quiet(self, endpoint, seconds):
        """No line of this endpoint's events for that long."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                _, line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                return
            assert line is None or not mentions(line, endpoint), line

    def errors(self):
        if self.stderr.closed:
            return self.final_errors
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self, sig=signal.SIGINT):
        """Asks the CLI to stop; returns its exit code (killed after 10 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"tail ignored {sig!r}; stderr:\n{self.errors()}")
        self.reader.join(5)
        self.final_errors = self.errors()
        self.stderr.close()
        return self.proc.returncode


@pytest.fixture
def tails():
    """Every Tail a test starts is stopped afterwards, whatever happened."""
    started = []

    def start(*args, **kw):
        started.append(Tail(*args, **kw))
        return started[-1]

    yield start
    for t in started:
        stop_process(t.proc, signal.SIGKILL)


@pytest.fixture
def consumer(stack):
    name = "it-cli-" + uuid.uuid4().hex[:10]
    yield name
    unsubscribe(stack, name)


def db_now(stack):
    with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT now()::text")
        now = cur.fetchone()[0]
    conn.close()
    return now


def test_tail_prints_json_lines_with_every_field(stack, endpoint):
    since = db_now(stack)
    posted = [post_event(endpoint, event) for event in
              ("PAYMENT.COMPLETED", "TRANSFER.CREATED", "PAYMENT.STATUS.UPDATED")]
    # Everything PostgreSQL has to escape, in each string field.
    posted.append(post_event(endpoint, 'PAYMENT.\u00dcBER "quoted" \\ end',
                             event_id=f'"{uuid.uuid4()}" \\ \u00e9',
                             note="tab\t newline\n \u2028"))
    # Valid JSON that jsonb cannot hold: stored with payload NULL.
    nul = json.dumps({"event": "PAYMENT.NUL", "eventId": str(uuid.uuid4()), "x": "a\u0000b"})
    r = endpoint.post(nul.encode())
    assert r.status == 200, r
    wait_readable(stack.database_url, [i for i, _ in posted] + [r.json()["id"]])
    p = cli(stack, "tail", "--since", since)
    assert p.returncode == 0, p.stderr
    mine = [o for o in json_lines(p.stdout) if o["endpoint"] == endpoint.name]
    assert [o["id"] for o in mine] == [i for i, _ in posted] + [r.json()["id"]]
    for obj, (event_id, body) in zip(mine, posted):
        assert set(obj) == FIELDS
        assert obj["event"] == body["event"]
        assert obj["payload"] == body
        assert obj["dedup_key"] == "/eventId=" + body["eventId"]
        assert obj["signature"] == "valid"
        assert obj["received_at"].startswith(since[:4])
    assert mine[-1]["event"] == "PAYMENT.NUL" and mine[-1]["payload"] is None

    # Without --consumer nothing is remembered: the same again, and a filter.
    again = cli(stack, "tail", "--since", since, "--event", "PAYMENT.%")
    assert again.returncode == 0, again.stderr
    ids = [o["id"] for o in json_lines(again.stdout) if o["endpoint"] == endpoint.name]
    assert ids == [posted[0][0], posted[2][0], posted[3][0], r.json()["id"]]
    # From the end (the default) none of them; --max bounds the output.
    assert not mentions(cli(stack, "tail").stdout, endpoint)
    oldest = cli(stack, "tail", "--since", "beginning", "--max", "2").stdout
    assert len([line for line in oldest.split("\n") if line]) == 2


def test_tail_follow_consumer_wakes_on_notify(stack, endpoint, tails, consumer):
    # A poll interval far above the timeout: only the NOTIFY can wake it in time.
    t = tails(stack, "--follow", "--consumer", consumer, "--poll-interval", "600")
    wait_for_consumer(stack, consumer)
    for _ in range(3):
        event_id, _ = post_event(endpoint)
        posted_at = time.monotonic()
        obj = t.next_for(endpoint, timeout=5)
        assert obj["id"] == event_id
        print(f"event {event_id}: printed {time.monotonic() - posted_at:.3f}s after the 200")
    assert t.stop(signal.SIGTERM) == 0


def test_tail_follow_survives_a_killed_connection(stack, endpoint, tails, consumer, db):
    t = tails(stack, "--follow", "--consumer", consumer, "--poll-interval", "600")
    wait_for_consumer(stack, consumer)
    first, _ = post_event(endpoint)
    assert t.next_for(endpoint)["id"] == first

    with db.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'ipayout-events' AND usename = 'ipayout_consumer'")
        assert cur.fetchall() == [(True,)]
    # Posted while the CLI may still be reconnecting: caught up on connect.
    second, _ = post_event(endpoint)
    assert t.next_for(endpoint)["id"] == second
    # And LISTEN is back: the next one comes by notification again, quickly.
    third, _ = post_event(endpoint)
    assert t.next_for(endpoint, timeout=5)["id"] == third
    t.assert_quiet(endpoint, 1.0)  # the first one was acked: never again
    assert t.stop() == 0
    assert "connection lost" in t.errors()


def test_tail_consumer_restart_resumes_without_repeats(stack, endpoint, tails, consumer):
    t = tails(stack, "--follow", "--consumer", consumer)
    wait_for_consumer(stack, consumer)
    before = [post_event(endpoint)[0] for _ in range(2)]
    assert [t.next_for(endpoint)["id"] for _ in before] == before
    assert t.stop() == 0

    during = [post_event(endpoint)[0] for _ in range(2)]  # nobody is reading
    t2 = tails(stack, "--follow", "--consumer", consumer)
    assert [t2.next_for(endpoint)["id"] for _ in during] == during
    t2.assert_quiet(endpoint, 1.0)
    assert t2.stop() == 0

    # Without --follow: prints what is pending and exits 0; nothing is left.
    after, _ = post_event(endpoint)
    wait_readable(stack.database_url, [after])
    p = cli(stack, "tail", "--consumer", consumer)
    assert p.returncode == 0, p.stderr
    assert [o["id"] for o in json_lines(p.stdout)] == [after]
    assert cli(stack, "tail", "--consumer", consumer).stdout == ""


def test_tail_follow_reads_again_without_a_notification(stack, endpoint, tails, consumer):
    """An open writing transaction holds the horizon back: the event's NOTIFY
    wakes the CLI too early to read it. When that transaction ends (no NOTIFY
    of its own), the periodic read prints the event."""
    t = tails(stack, "--follow", "--consumer", consumer, "--poll-interval", "0.5")
    wait_for_consumer(stack, consumer)
    holder = psycopg2.connect(stack.database_url)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_current_xact_id()")  # a transaction id, held open
        event_id, _ = post_event(endpoint)
        t.assert_quiet(endpoint, 1.5)
        holder.rollback()
        assert t.next_for(endpoint, timeout=5)["id"] == event_id
    finally:
        holder.close()
    assert t.stop() == 0


def test_tail_follow_without_consumer(stack, endpoint, tails):
    t = tails(stack, "--follow", "--event", "TRANSFER.%", "--since", db_now(stack))
    post_event(endpoint, "PAYMENT.COMPLETED")
    transfer, _ = post_event(endpoint, "TRANSFER.CREATED")
    assert t.next_for(endpoint)["id"] == transfer
    assert t.stop() == 0


def test_consumers_replay_subscribe_unsubscribe_purge(stack, endpoint, consumer):
    p = cli(stack, "subscribe", consumer, "--event", "PAYMENT.%")
    assert p.returncode == 0 and "created" in p.stdout, p.stderr
    assert "exists" in cli(stack, "subscribe", consumer).stdout
    ids = [post_event(endpoint)[0] for _ in range(3)]
    wait_readable(stack.database_url, ids)

    table = cli(stack, "consumers").stdout.splitlines()
    assert table[0].split()[:4] == ["CONSUMER", "PATTERN", "POSITION", "PENDING"]
    row = next(line.split() for line in table if line.startswith(consumer + " "))
    assert row[1] == "PAYMENT.%" and int(row[3]) >= 3

    def tail_ids():
        p = cli(stack, "tail", "--consumer", consumer)
        assert p.returncode == 0, p.stderr
        return [o["id"] for o in json_lines(p.stdout) if o["endpoint"] == endpoint.name]

    assert tail_ids() == ids
    assert tail_ids() == []
    assert cli(stack, "replay", "--consumer", consumer, "--from-id", str(ids[1])).returncode == 0
    assert tail_ids() == ids[1:]
    assert cli(stack, "replay", "--consumer", consumer, "--from-id", str(ids[0])).returncode == 0
    assert cli(stack, "replay", "--consumer", consumer, "--since", "end").returncode == 0
    assert tail_ids() == []  # skipped ahead past the rewind

    bad = cli(stack, "replay", "--consumer", consumer)
    assert bad.returncode == 2 and "--from-id" in bad.stderr
    # The reader role may not purge; the error is one readable line.
    denied = cli(stack, "purge", "--older-than", "3650 days")
    assert denied.returncode == 1 and "permission denied" in denied.stderr
    owner = subprocess.run([str(CLI), "purge", "--older-than", "3650 days", "--database",
                            stack.database_url], capture_output=True, text=True, timeout=60)
    assert owner.returncode == 0 and owner.stdout.startswith("purged "), owner.stderr
    # A time in the future (a typo in the year) or a negative age would purge
    # every event: refused before anything is deleted.
    with psycopg2.connect(stack.database_url) as db, db.cursor() as cur:
        cur.execute("SELECT count(*) FROM ipayout.events")
        before = cur.fetchone()[0]
        assert before > 0
        for age in ("2999-01-01 00:00:00+00", "-5 days"):
            r = subprocess.run([str(CLI), "purge", "--older-than", age, "--force", "--database",
                                stack.database_url], capture_output=True, text=True, timeout=60)
            assert r.returncode == 2 and "nothing purged" in r.stderr, (age, r.stderr)
        cur.execute("SELECT count(*) FROM ipayout.events")
        assert cur.fetchone()[0] == before

    assert cli(stack, "unsubscribe", consumer).returncode == 0
    gone = cli(stack, "unsubscribe", consumer)
    assert gone.returncode == 1 and "no consumer" in gone.stderr
    assert cli(stack, "bogus").returncode == 2
    assert "usage:" in cli(stack, "--help").stdout


def test_database_from_environment(stack, endpoint):
    since = db_now(stack)  # not from the beginning: other tests store 1024-deep JSON
    event_id, _ = post_event(endpoint)
    wait_readable(stack.database_url, [event_id])
    env = dict(os.environ, IPAYOUT_DATABASE=stack.info["CONSUMER_DATABASE_URL"])
    p = subprocess.run([str(CLI), "tail", "--since", since, "--event", "PAYMENT.%"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert event_id in [o["id"] for o in json_lines(p.stdout)]


def test_durations_mean_that_long_ago(stack, endpoint, consumer):
    """--since and --older-than take 90s/15m/24h/7d/2w as well as timestamps."""
    # --since starts at the first event received at or after that time and
    # goes on in feed order: a real gap between two events, since backdating
    # received_at would not move an event in the feed.
    first = post_event(endpoint)[0]
    time.sleep(10)
    second = post_event(endpoint)[0]
    wait_readable(stack.database_url, [first, second])

    def tail_ids(*args):
        p = cli(stack, "tail", *args)
        assert p.returncode == 0, p.stderr
        return [o["id"] for o in json_lines(p.stdout) if o["endpoint"] == endpoint.name]

    assert cli(stack, "subscribe", consumer, "--since", "1h").returncode == 0
    assert tail_ids("--since", "5s") == [second]
    assert tail_ids("--since", "1m") == [first, second]
    assert tail_ids("--consumer", consumer) == [first, second]
    replay = cli(stack, "replay", "--consumer", consumer, "--since", "5s")
    assert replay.returncode == 0, replay.stderr
    assert tail_ids("--consumer", consumer) == [second]
    replay = cli(stack, "replay", "--consumer", consumer, "--since", "2m")
    assert replay.returncode == 0, replay.stderr
    assert tail_ids("--consumer", consumer) == [first, second]

    # Retention by received_at: here backdating is what is tested.
    third = post_event(endpoint)[0]
    ids = [first, second, third]
    with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE ipayout.events SET received_at = now() - interval '3 hours' "
                    "WHERE id = %s", (first,))
        cur.execute("UPDATE ipayout.events SET received_at = now() - interval '2 hours' "
                    "WHERE id = %s", (second,))
        cur.execute("SELECT to_char((now() - interval '90 minutes') AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD HH24:MI:SS+00')")
        ninety_minutes_ago = cur.fetchone()[0]
    conn.close()
    wait_readable(stack.database_url, ids)
    assert third in tail_ids("--since", ninety_minutes_ago)  # absolute timestamps still work

    refused = cli(stack, "tail", "--since", "1 minute ago")
    assert refused.returncode == 2 and refused.stdout == ""
    assert ("--since needs 'beginning', 'end', a duration (90s, 15m, 24h, 7d, 2w: that long "
            "ago) or a timestamp ('2026-11-26 10:00:00+00'), not '1 minute ago'") in refused.stderr
    assert cli(stack, "replay", "--consumer", consumer, "--since", "yesterday").returncode == 2

    def purge(age):
        p = subprocess.run([str(CLI), "purge", "--older-than", age, "--force", "--database",
                            stack.database_url], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout.startswith("purged "), p.stderr
        return p.stdout

    def left():
        with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT array_agg(id ORDER BY id) FROM ipayout.events WHERE id = ANY(%s)",
                        (ids,))
            got = cur.fetchone()[0]
        conn.close()
        return got

    assert "older than 150m (forced)" in purge("150m")  # only the one of three hours ago
    assert left() == ids[1:]
    purge(ninety_minutes_ago)  # a timestamp: received before it
    assert left() == ids[2:]
    bad = cli(stack, "purge", "--older-than", "1 day ago")
    assert bad.returncode == 2 and "--older-than needs a duration" in bad.stderr


# Every command with an unknown option, and with an option only another
# command takes: exit status 2, the reason and the usage on stderr, nothing on
# stdout (a consumer that ignored the option would have printed or changed).
REFUSED = [
    (["tail", "--frobnicate"], "unknown option '--frobnicate'"),
    (["tail", "--older-than", "1 day"], "tail does not take --older-than"),
    (["consumers", "--frobnicate"], "unknown option '--frobnicate'"),
    (["consumers", "--follow"], "consumers does not take --follow"),
    (["replay", "--consumer", "CONSUMER", "--from-id", "1", "--frobnicate"],
     "unknown option '--frobnicate'"),
    (["replay", "--consumer", "CONSUMER", "--from-id", "1", "--max", "1"],
     "replay does not take --max"),
    (["subscribe", "CONSUMER", "--frobnicate"], "unknown option '--frobnicate'"),
    (["subscribe", "CONSUMER", "--force"], "subscribe does not take --force"),
    (["unsubscribe", "CONSUMER", "--frobnicate"], "unknown option '--frobnicate'"),
    (["unsubscribe", "CONSUMER", "--force"], "unsubscribe does not take --force"),
    (["purge", "--older-than", "3650 days", "--frobnicate"], "unknown option '--frobnicate'"),
    (["purge", "--older-than", "3650 days", "--consumer", "CONSUMER"],
     "purge does not take --consumer"),
]


@pytest.mark.parametrize("args,message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_commands_refuse_options_they_do_not_take(stack, consumer, args, message):
    assert cli(stack, "subscribe", consumer).returncode == 0
    p = cli(stack, *[consumer if a == "CONSUMER" else a for a in args])
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert message in p.stderr and "usage:" in p.stderr, p.stderr
    assert p.stdout == ""
    # Still there, at the same place: nothing was done.
    table = cli(stack, "consumers").stdout
    assert any(line.startswith(consumer + " ") for line in table.splitlines()), table
