"""i-payout's registration options and rotation without a gap (issue 13),
through the real nginx, pool and PostgreSQL: Content-Type of signed and
unsigned bodies, key and token rotation with a grace period, the success
answer, a required header."""
import json
import re
import time
import uuid

import pytest

from conftest import count_events
from webhook import Endpoint, create_endpoint, request, sign


def ev(event_id=None):
    return json.dumps({"event": "PAYMENT.COMPLETED",
                       "eventId": event_id or str(uuid.uuid4())}).encode()


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def settle(probe, timeout=10):
    """Waits until `probe()` is true (one worker picked an endpoint change up),
    then one more refresh interval (endpoint_refresh_ms, 1 s), so every worker
    has it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if probe():
            time.sleep(1.2)
            return
        time.sleep(0.1)
    raise AssertionError("the workers never picked the change up")


def stored_row(db, event_id):
    with db.cursor() as cur:
        cur.execute("SELECT signature, headers, endpoint_id FROM ipayout.events WHERE id = %s",
                    (event_id,))
        return cur.fetchone()


def listed(stack, ep_name):
    p = stack.cli("endpoint", "list")
    assert p.returncode == 0, p.stderr
    header = p.stdout.splitlines()[0].split()
    for line in p.stdout.splitlines()[1:]:
        if f" {ep_name} " in line:
            # previous_key / previous_token are "until <time>" or "-".
            return header, line
    raise AssertionError(f"{ep_name} not in endpoint list:\n{p.stdout}")


def metrics(stack):
    r = request(stack.info["METRICS_URL"], method="GET")
    assert r.status == 200, r
    return r.body.decode()


# ------------------------------------------------------------- Content-Type

def test_signed_json_is_stored_whatever_its_content_type(stack, db, endpoint):
    body = ev()
    r = endpoint.post(body, content_type="text/plain")
    assert r.status == 200 and r.json()["status"] == "accepted", r
    signature, headers, _ = stored_row(db, r.json()["id"])
    assert signature == "valid"
    assert headers["content-type"] == "text/plain"


@pytest.mark.parametrize("policy", ["record", "off"])
def test_unsigned_body_needs_a_json_content_type(stack, db, policy):
    ep = create_endpoint(stack, name("ct-" + policy), policy=policy)
    before = count_events(db, ep.name)
    missing = ep.post(ev(), content_type="text/plain", ts=False, signature=False)
    assert missing.status == 415 and missing.json()["error"] == "unsupported_media_type", missing
    wrong = ep.post(ev(), content_type="text/plain", signature="A" * 43 + "=")
    assert wrong.status == 415, wrong
    assert count_events(db, ep.name) == before
    ok = ep.post(ev(), content_type="application/json", ts=False, signature=False)
    assert ok.status == 200, ok
    assert stored_row(db, ok.json()["id"])[0] == ("missing" if policy == "record"
                                                  else "not_checked")
    if policy == "record":
        # Under record, a body the key signed vouches for itself.
        signed = ep.post(ev(), content_type="text/plain")
        assert signed.status == 200 and stored_row(db, signed.json()["id"])[0] == "valid", signed
    else:
        # Policy off looks at no signature: even a good one does not vouch.
        assert ep.post(ev(), content_type="text/plain").status == 415


# ------------------------------------------------------------- key rotation

def test_set_key_keeps_the_previous_key_for_its_grace(stack, db):
    ep = create_endpoint(stack, name("key"), key="old-key-1")
    p = stack.cli("endpoint", "set-key", ep.name, "--key", "new-key-2", "--keep-previous", "1h")
    assert p.returncode == 0, p.stderr
    assert "new-key-2" not in p.stderr + p.stdout and "old-key-1" not in p.stderr + p.stdout
    new = type(ep)(stack, ep.name, "new-key-2", ep.policy, ep.url)
    settle(lambda: new.post(ev()).status == 200)

    by_old = ep.post(ev())
    assert by_old.status == 200, by_old
    assert stored_row(db, by_old.json()["id"])[0] == "valid_previous_key"
    by_new = new.post(ev())
    assert by_new.status == 200 and stored_row(db, by_new.json()["id"])[0] == "valid"
    header, line = listed(stack, ep.name)
    assert "previous_key" in header
    until = re.search(r"until (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)", line)
    assert until, line
    with db.cursor() as cur:
        cur.execute("SELECT to_char(previous_key_until AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), previous_key_until - now() "
                    "FROM ipayout.endpoints WHERE name = %s", (ep.name,))
        shown, left = cur.fetchone()
    assert shown == until.group(1)
    assert 3500 < left.total_seconds() <= 3600

    # The grace ends by the clock, not by a reload: the endpoint does not
    # change after this, so the workers keep the snapshot they have.
    with db.cursor() as cur:
        cur.execute("UPDATE ipayout.endpoints SET previous_key_until = now() + interval '3 s' "
                    "WHERE name = %s RETURNING previous_key_until", (ep.name,))
        ends = cur.fetchone()[0].timestamp()
    time.sleep(1.5)  # every worker has the new end
    assert ep.post(ev()).status == 200
    time.sleep(max(0.0, ends - time.time()) + 0.2)
    late = ep.post(ev())
    assert late.status == 401 and late.json()["error"] == "signature_invalid", late
    assert new.post(ev()).status == 200
    assert "until" not in listed(stack, ep.name)[1]  # no grace running any more


def test_keep_previous_zero_revokes_the_old_key_at_once(stack, db):
    ep = create_endpoint(stack, name("revoke"), key="leaked-key")
    p = stack.cli("endpoint", "set-key", ep.name, "--key", "fresh-key", "--keep-previous=0")
    assert p.returncode == 0, p.stderr
    new = type(ep)(stack, ep.name, "fresh-key", ep.policy, ep.url)
    settle(lambda: new.post(ev()).status == 200)
    r = ep.post(ev())
    assert r.status == 401 and r.json()["error"] == "signature_invalid", r
    with db.cursor() as cur:
        cur.execute("SELECT previous_key, previous_key_until FROM ipayout.endpoints "
                    "WHERE name = %s", (ep.name,))
        assert cur.fetchone() == (None, None)


def test_set_key_default_grace_is_a_day_and_bad_durations_are_refused(stack, db):
    ep = create_endpoint(stack, name("default"), key="k-one")
    bad = stack.cli("endpoint", "set-key", ep.name, "--key", "k-two", "--keep-previous", "1 day")
    assert bad.returncode == 2 and "--keep-previous needs a duration" in bad.stderr, bad.stderr
    p = stack.cli("endpoint", "set-key", ep.name, "--key", "k-two")
    assert p.returncode == 0, p.stderr
    with db.cursor() as cur:
        cur.execute("SELECT previous_key, extract(epoch FROM previous_key_until - now()) "
                    "FROM ipayout.endpoints WHERE name = %s", (ep.name,))
        key, left = cur.fetchone()
    assert key == "k-one" and 86300 < float(left) <= 86400


# ------------------------------------------------------------- token rotation

def test_rotate_token_keeps_the_old_url_for_its_grace(stack, db):
    ep = create_endpoint(stack, name("token"))
    p = stack.cli("endpoint", "rotate-token", ep.name, f"--notification-url={stack.base_url}",
                  "--keep-previous", "2h")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(stack.base_url + "/ipayout/webhooks/"), p.stdout
    new = type(ep)(stack, ep.name, ep.key, ep.policy, lines[0])
    assert new.url != ep.url
    settle(lambda: new.post(ev()).status == 200)

    # The old URL delivers, verified against the URL it was registered with.
    old = ep.post(ev())
    assert old.status == 200, old
    signature, _, endpoint_id = stored_row(db, old.json()["id"])
    assert signature == "valid"
    fresh = new.post(ev())
    assert fresh.status == 200 and stored_row(db, fresh.json()["id"])[2] == endpoint_id
    crossed = ep.post(ev(), sign_url=new.url)
    assert crossed.status == 401, crossed
    _, line = listed(stack, ep.name)
    assert len(re.findall(r"until \d{4}-", line)) == 1, line  # the token's, not the key's

    # Then 404, like any token never issued, by the clock.
    with db.cursor() as cur:
        cur.execute("UPDATE ipayout.endpoints SET previous_token_until = now() + interval '3 s' "
                    "WHERE name = %s RETURNING previous_token_until", (ep.name,))
        ends = cur.fetchone()[0].timestamp()
    time.sleep(1.5)
    assert ep.post(ev()).status == 200
    time.sleep(max(0.0, ends - time.time()) + 0.2)
    gone = ep.post(ev())
    never = ep.post(ev(), url=stack.base_url + "/ipayout/webhooks/" + "u" * 43)
    assert gone.status == 404 and never.status == 404, (gone, never)
    assert gone.body == never.body
    assert new.post(ev()).status == 200


def test_rotate_token_keep_previous_zero_ends_the_old_url_now(stack, db):
    ep = create_endpoint(stack, name("token0"))
    p = stack.cli("endpoint", "rotate-token", ep.name, f"--notification-url={stack.base_url}",
                  "--keep-previous", "0")
    assert p.returncode == 0, p.stderr
    new = type(ep)(stack, ep.name, ep.key, ep.policy, p.stdout.strip())
    settle(lambda: new.post(ev()).status == 200)
    r = ep.post(ev())
    assert r.status == 404, r
    assert " - " in listed(stack, ep.name)[1]


# ------------------------------------------------------------- success answer

def test_set_response(stack, db, endpoint):
    p = stack.cli("endpoint", "set-response", endpoint.name, "--status", "202",
                  "--body", "OK {status} {id}")
    assert p.returncode == 0, p.stderr
    settle(lambda: endpoint.post(ev()).status == 202)
    r = endpoint.post(ev())
    assert r.status == 202 and re.fullmatch(rb"OK accepted \d+", r.body), r
    assert r.headers["content-type"].startswith("text/plain")
    p = stack.cli("endpoint", "set-response", endpoint.name, "--body", "")
    assert p.returncode == 0, p.stderr
    settle(lambda: endpoint.post(ev()).body.startswith(b"{"))
    r = endpoint.post(ev())
    assert r.status == 202 and r.json()["status"] == "accepted", r
    bad = stack.cli("endpoint", "set-response", endpoint.name, "--status", "302")
    assert bad.returncode == 1 and "invalid endpoint" in bad.stderr, bad.stderr
    assert stack.cli("endpoint", "set-response", endpoint.name, "--code=1").returncode == 2


# ------------------------------------------------------------- required header

def test_required_header(stack, db, endpoint):
    secret = "v4lue-" + uuid.uuid4().hex
    p = stack.cli("endpoint", "set-required-header", endpoint.name, f"X-Shared-Secret: {secret}")
    assert p.returncode == 0, p.stderr
    assert secret not in p.stdout + p.stderr
    settle(lambda: endpoint.post(ev()).status == 401)
    label = f'ipayout_required_header_failures_total{{endpoint="{endpoint.name}"}}'

    def failures():
        m = re.search("^" + re.escape(label) + r" (\d+)$", metrics(stack), re.M)
        return int(m.group(1)) if m else 0

    before_count, before_failures = count_events(db, endpoint.name), failures()
    absent = endpoint.post(ev())
    wrong = endpoint.post(ev(), extra_headers={"X-Shared-Secret": secret[:-1] + "x"})
    longer = endpoint.post(ev(), extra_headers={"X-Shared-Secret": secret + "x"})
    for r in (absent, wrong, longer):
        assert r.status == 401 and r.json()["error"] == "required_header_invalid", r
        assert secret.encode() not in r.body and b"shared" not in r.body.lower()
    assert count_events(db, endpoint.name) == before_count
    assert failures() - before_failures == 3

    ok = endpoint.post(ev(), extra_headers={"X-Shared-Secret": secret, "X-Other": "kept"})
    assert ok.status == 200, ok
    _, headers, _ = stored_row(db, ok.json()["id"])
    assert "x-shared-secret" not in headers and headers["x-other"] == "kept"
    assert secret not in json.dumps(headers)

    _, line = listed(stack, endpoint.name)
    assert "x-shared-secret" in line and secret not in line
    assert secret not in stack.log()

    p = stack.cli("endpoint", "clear-required-header", endpoint.name)
    assert p.returncode == 0, p.stderr
    settle(lambda: endpoint.post(ev()).status == 200)
    assert " - " in listed(stack, endpoint.name)[1]


def test_required_header_from_stdin_and_refusals(stack, db, endpoint):
    p = stack.cli("endpoint", "set-required-header", endpoint.name, "-",
                  input="X-From-Stdin: s3cr3t-stdin\n")
    assert p.returncode == 0, p.stderr
    with db.cursor() as cur:
        cur.execute("SELECT required_header_name, required_header_value FROM ipayout.endpoints "
                    "WHERE name = %s", (endpoint.name,))
        assert cur.fetchone() == ("x-from-stdin", "s3cr3t-stdin")
    for bad, message in [("no colon", "expects 'X-Name: value'"),
                         ("X_Under: v", "the header name must be"),
                         ("Content-Type: v", "cannot be the required header"),
                         ("X-Empty:   ", "the value is empty")]:
        r = stack.cli("endpoint", "set-required-header", endpoint.name, bad)
        assert r.returncode == 1 and message in r.stderr, (bad, r.stderr)


def test_a_change_committed_after_a_later_one_is_still_loaded(stack, db):
    """Endpoint changes commit in their own order: a change stamped T1 that
    commits after another stamped T2 > T1 was already loaded leaves the
    table's count and max(updated_at) as they were. The workers must still
    load it (a key that verifies nowhere would turn i-payout's deliveries into
    401s until some other change), and without reloading everything: the
    look back of a load of the changes finds it."""
    import psycopg2
    slow, quick = create_endpoint(stack, name("slow")), create_endpoint(stack, name("quick"))
    full = endpoint_loads(stack).get("full", 0)
    holder = psycopg2.connect(stack.database_url)
    try:
        with holder.cursor() as cur:  # T1: stamped now, committed later
            cur.execute("UPDATE ipayout.endpoints SET ipayout_key = 'pk_new_slow' WHERE name = %s",
                        (slow.name,))
        time.sleep(0.05)
        with db.cursor() as cur:  # T2 > T1, committed at once
            cur.execute("UPDATE ipayout.endpoints SET ipayout_key = 'pk_new_quick' WHERE name = %s",
                        (quick.name,))
        quick.key = "pk_new_quick"
        settle(lambda: quick.post(ev()).status == 200)  # the workers loaded T2
        holder.commit()
    finally:
        holder.close()
    slow.key = "pk_new_slow"
    settle(lambda: slow.post(ev()).status == 200, timeout=15)
    assert endpoint_loads(stack).get("full", 0) == full
    assert "look_back=true" in stack.log()


# ------------------------------------------------------------- incremental refresh

def endpoint_loads(stack):
    """ipayout_endpoint_loads_total by kind, summed over the pool's workers."""
    found = dict(re.findall(r'^ipayout_endpoint_loads_total\{kind="(\w+)"\} (\d+)$',
                            metrics(stack), re.M))
    return {k: int(v) for k, v in found.items()}


def enabled_loaded(stack):
    """ipayout_endpoints_loaded of each worker."""
    return [int(v) for v in re.findall(r'^ipayout_endpoints_loaded\{worker="\d+"\} (\d+)$',
                                       metrics(stack), re.M)]


def test_each_kind_of_change_is_loaded_without_a_full_reload(stack, db):
    """A changed key, a rotated token, a disable, a new endpoint and a deleted
    one each reach every worker as a load of the changed rows only: the full
    reload count stays where it was (the first load, SIGHUP and a new
    connection are the only full loads when nothing goes wrong)."""
    a, b = create_endpoint(stack, name("inc-a")), create_endpoint(stack, name("inc-b"))
    before = endpoint_loads(stack)
    assert before.get("full", 0) >= 1, before

    with db.cursor() as cur:  # an UPDATE: the new key verifies, the old one not
        cur.execute("UPDATE ipayout.endpoints SET ipayout_key = 'pk_inc_new' WHERE name = %s",
                    (a.name,))
    old_key, a.key = a.key, "pk_inc_new"
    settle(lambda: a.post(ev()).status == 200)
    body, ts = ev(), str(int(time.time()))
    assert a.post(body, ts=ts, signature=sign(old_key, ts, a.url, body)).status == 401

    # A rotated token: the new URL delivers, and the old one through its grace.
    p = stack.cli("endpoint", "rotate-token", b.name, f"--notification-url={stack.base_url}",
                  "--keep-previous", "1h")
    assert p.returncode == 0, p.stderr
    new_b = type(b)(stack, b.name, b.key, b.policy, p.stdout.strip())
    settle(lambda: new_b.post(ev()).status == 200)
    assert b.post(ev()).status == 200
    # Rotated again at once: the first token is gone, the second is the previous one.
    p = stack.cli("endpoint", "rotate-token", b.name, f"--notification-url={stack.base_url}",
                  "--keep-previous", "1h")
    assert p.returncode == 0, p.stderr
    newest_b = type(b)(stack, b.name, b.key, b.policy, p.stdout.strip())
    settle(lambda: newest_b.post(ev()).status == 200)
    assert b.post(ev()).status == 404 and new_b.post(ev()).status == 200

    # Disabled: 404, both of its tokens.
    assert stack.cli("endpoint", "disable", b.name).returncode == 0
    settle(lambda: newest_b.post(ev()).status == 404)
    assert new_b.post(ev()).status == 404
    assert stack.cli("endpoint", "enable", b.name).returncode == 0
    settle(lambda: newest_b.post(ev()).status == 200)

    # A new endpoint, then deleted (it has no events, so the row can go).
    c = create_endpoint(stack, name("inc-c"))
    with db.cursor() as cur:
        cur.execute("DELETE FROM ipayout.endpoints WHERE name = %s", (c.name,))
    settle(lambda: c.post(ev()).status == 404)

    after = endpoint_loads(stack)
    assert after.get("full", 0) == before.get("full", 0), (before, after)
    assert after["incremental"] > before.get("incremental", 0), (before, after)
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM ipayout.endpoints WHERE enabled")
        enabled = cur.fetchone()[0]
    assert enabled_loaded(stack) == [enabled] * len(enabled_loaded(stack)), enabled
    assert re.search(r'msg="endpoints loaded" load=incremental changed=\d+', stack.log())


def test_a_row_the_stamps_cannot_account_for_is_loaded_by_a_full_reload(stack, db):
    """A row inserted with an old updated_at (a restore, a hand-made row) is
    not among the rows stamped since the last load; the count says the table
    has a row the worker never saw, and the worker loads everything."""
    before = endpoint_loads(stack)
    token, ep_name = "h" * 43, name("restored")
    url = f"{stack.base_url}/ipayout/webhooks/{token}"
    with db.cursor() as cur:
        cur.execute("INSERT INTO ipayout.endpoints (name, token_hash, ipayout_key, "
                    "notification_url, updated_at) VALUES (%s, sha256(%s::bytea), 'pk_restored', "
                    "%s, now() - interval '1 day')", (ep_name, token.encode(), url))
    restored = Endpoint(stack, ep_name, "pk_restored", "required", url)
    settle(lambda: restored.post(ev()).status == 200)
    assert endpoint_loads(stack)["full"] > before["full"]
