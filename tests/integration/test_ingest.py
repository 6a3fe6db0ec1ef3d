"""The ingest contract through the real nginx (TLS), worker pool and PostgreSQL."""
import json
import select
import time
import uuid

import psycopg2
import pytest

from conftest import count_events
from webhook import FIXTURES, create_endpoint, request, sign


def unique_body(event="PAYMENT.COMPLETED", **extra):
    return json.dumps({"event": event, "eventId": str(uuid.uuid4()), **extra}).encode()


def test_signed_fixture_is_accepted_and_stored(endpoint, db):
    body = (FIXTURES / "payment_status_updated.json").read_bytes()
    r = endpoint.post(body)
    assert r.status == 200, r
    assert r.json()["status"] == "accepted"
    event_id = r.json()["id"]
    with db.cursor() as cur:
        cur.execute("SELECT event, dedup_key, payload->'data'->>'paymentId', raw_body, signature, "
                    "headers->>'x-signature', headers->>'content-type', host(remote_addr), "
                    "txid IS NOT NULL FROM ipayout.events WHERE id = %s", (event_id,))
        row = cur.fetchone()
    assert row[0] == "PAYMENT.STATUS.UPDATED"
    assert row[1] == "/eventId=3e0b6c1d-52a7-4f0e-9b8c-71d2e4a5f690"
    assert row[2] == "PAY-0031415926"
    assert row[3].encode() == body
    assert row[4] == "valid"
    assert row[5] and row[6] == "application/json"
    assert row[7] == "127.0.0.1"
    assert row[8] is True


def test_every_fixture_is_stored(endpoint, db):
    for f in sorted(FIXTURES.glob("*.json")):
        r = endpoint.post(f.read_bytes())
        assert r.status == 200 and r.json()["status"] == "accepted", (f.name, r)
    assert count_events(db, endpoint.name) == len(list(FIXTURES.glob("*.json")))


def test_redelivery_gives_one_row_and_one_notification(endpoint, db, stack):
    listener = psycopg2.connect(stack.database_url)
    listener.autocommit = True
    with listener.cursor() as cur:
        cur.execute("LISTEN ipayout_events")
    body = unique_body()
    first = endpoint.post(body)
    # i-payout signs each delivery with a fresh timestamp: still the same event.
    time.sleep(1.1)
    second = endpoint.post(body)
    assert first.status == 200 and first.json()["status"] == "accepted", first
    assert second.status == 200 and second.json() == {"status": "duplicate", "id": first.json()["id"]}
    assert count_events(db, endpoint.name) == 1

    notes = []
    deadline = time.time() + 3
    while time.time() < deadline:
        if select.select([listener], [], [], 0.2)[0]:
            listener.poll()
            notes += [n for n in listener.notifies if json.loads(n.payload)["endpoint"] == endpoint.name]
            listener.notifies.clear()
    listener.close()
    assert len(notes) == 1, notes


def test_listen_gets_notification_after_commit(endpoint, stack):
    listener = psycopg2.connect(stack.database_url)
    listener.autocommit = True
    with listener.cursor() as cur:
        cur.execute("LISTEN ipayout_events")
    r = endpoint.post(unique_body("TRANSFER.CREATED"))
    assert r.status == 200, r
    payload = None
    deadline = time.time() + 5
    while payload is None and time.time() < deadline:
        if select.select([listener], [], [], 0.5)[0]:
            listener.poll()
            for n in listener.notifies:
                p = json.loads(n.payload)
                if p.get("endpoint") == endpoint.name:
                    assert n.channel == "ipayout_events"
                    payload = p
            listener.notifies.clear()
    assert payload == {"id": r.json()["id"], "event": "TRANSFER.CREATED", "endpoint": endpoint.name}
    # The notification came at commit: the row is visible to any other session.
    with listener.cursor() as cur:
        cur.execute("SELECT event FROM ipayout.events WHERE id = %s", (payload["id"],))
        assert cur.fetchone() == ("TRANSFER.CREATED",)
    listener.close()


def test_unicode_survives_byte_for_byte(endpoint, db):
    body = (FIXTURES / "customer_created.json").read_bytes()
    body = body.replace(b'"country":"DK"', '"country":"DK","note":"日本語 😀 \\ud83d\\ude00 \\u00e9"'.encode())
    r = endpoint.post(body)
    assert r.status == 200, r
    with db.cursor() as cur:
        cur.execute("SELECT convert_to(raw_body, 'UTF8'), payload->'data'->>'firstName', "
                    "payload->'data'->>'lastName', payload->'data'->>'note' "
                    "FROM ipayout.events WHERE id = %s", (r.json()["id"],))
        raw, first, last, note = cur.fetchone()
    assert bytes(raw) == body
    assert (first, last) == ("Søren", "Kierkegaard-Ødegård")
    assert note == "日本語 😀 😀 é"


def test_a_large_body_is_stored_byte_for_byte_compressed_with_lz4(endpoint, db):
    """sql/008: bodies over the TOAST threshold are compressed with lz4 (faster
    than pglz), in raw_body and in payload, and read back exactly."""
    body = unique_body(items=[{"n": i, "note": "x" * 40} for i in range(5000)])
    assert len(body) > 100_000
    r = endpoint.post(body)
    assert r.status == 200, r
    with db.cursor() as cur:
        cur.execute("SELECT convert_to(raw_body, 'UTF8'), jsonb_array_length(payload->'items'), "
                    "pg_column_compression(raw_body), pg_column_compression(payload) "
                    "FROM ipayout.events WHERE id = %s", (r.json()["id"],))
        raw, items, raw_method, payload_method = cur.fetchone()
    assert bytes(raw) == body and items == 5000
    assert (raw_method, payload_method) == ("lz4", "lz4")


def test_jsonb_incompatible_body_is_kept_raw(endpoint, db):
    body = b'{"event":"CUSTOMER.UPDATED","eventId":"' + uuid.uuid4().hex.encode() + b'","name":"a\\u0000b"}'
    r = endpoint.post(body)
    assert r.status == 200 and r.json()["status"] == "accepted", r
    with db.cursor() as cur:
        cur.execute("SELECT payload IS NULL, raw_body, event FROM ipayout.events WHERE id = %s",
                    (r.json()["id"],))
        is_null, raw, event = cur.fetchone()
    assert is_null and raw.encode() == body and event == "CUSTOMER.UPDATED"


@pytest.mark.parametrize("body,code", [
    (b"not json", "bad_json"),
    (b"[1,2]", "bad_json"),
    (b'{"event":"A"', "bad_json"),
    (b'{"eventId":"x"}', "bad_event"),
    (b'{"event":42}', "bad_event"),
    (b"", "bad_json"),
])
def test_bad_json_is_400_and_stores_nothing(endpoint, db, body, code):
    r = endpoint.post(body)
    assert r.status == 400, r
    assert r.json()["error"] == code and r.json()["message"]
    assert count_events(db, endpoint.name) == 0


def test_signature_failures_are_401(endpoint, db):
    body = unique_body()
    missing = endpoint.post(body, signature=False)
    wrong = endpoint.post(body, signature=sign("another-key", str(int(time.time())), endpoint.url, body))
    wrong_url = endpoint.post(body, sign_url=endpoint.url.replace("https", "http"))
    old_ts = str(int(time.time()) - 3600)
    stale = endpoint.post(body, ts=old_ts)
    future = endpoint.post(body, ts=str(int(time.time()) + 3600))
    for r, code in [(missing, "signature_missing"), (wrong, "signature_invalid"),
                    (wrong_url, "signature_invalid"), (stale, "timestamp_out_of_window"),
                    (future, "timestamp_out_of_window")]:
        assert r.status == 401, r
        assert r.json()["error"] == code
        assert endpoint.key.encode() not in r.body
    assert count_events(db, endpoint.name) == 0


def test_policy_record_stores_the_verdict(stack, db):
    ep = create_endpoint(stack, "rec-" + uuid.uuid4().hex[:8], policy="record")
    r = ep.post(unique_body(), signature="AAAA" * 11)
    assert r.status == 200, r
    with db.cursor() as cur:
        cur.execute("SELECT signature FROM ipayout.events WHERE id = %s", (r.json()["id"],))
        assert cur.fetchone() == ("invalid",)


def test_unknown_and_disabled_tokens_get_the_same_404(stack, endpoint, db):
    body = unique_body()
    unknown = endpoint.post(body, url=stack.base_url + "/ipayout/webhooks/" + "A" * 43)
    short = endpoint.post(body, url=stack.base_url + "/ipayout/webhooks/abc")
    extra = endpoint.post(body, url=endpoint.url + "/more")
    p = stack.cli("endpoint", "disable", endpoint.name)
    assert p.returncode == 0, p.stderr
    deadline = time.time() + 10
    disabled = endpoint.post(body)
    while disabled.status != 404 and time.time() < deadline:
        time.sleep(0.1)
        disabled = endpoint.post(unique_body())
    for r in (unknown, short, extra, disabled):
        assert r.status == 404, r
        assert r.body == unknown.body
    assert count_events(db, endpoint.name) == 0 or disabled.status == 404


def test_method_not_allowed(endpoint):
    for method in ("GET", "PUT", "DELETE"):
        r = endpoint.post(b"", method=method)
        assert r.status == 405, (method, r)
        assert r.headers.get("allow") == "POST"
        assert r.json()["error"] == "method_not_allowed"


def test_signed_body_is_stored_whatever_its_content_type(endpoint, db):
    # i-payout's content-type options are undocumented: a body the key signed
    # is JSON whatever it says (unsigned ones: test_rotation.py, 415).
    for ct in ("text/plain", "application/x-www-form-urlencoded", None):
        r = endpoint.post(unique_body(), content_type=ct)
        assert r.status == 200, (ct, r)
    assert count_events(db, endpoint.name) == 3
    unsigned = endpoint.post(unique_body(), content_type="text/plain", signature=False)
    assert unsigned.status == 401, unsigned  # policy required: the signature decides first


def test_body_limit_is_the_same_in_nginx_and_worker(endpoint, db):
    prefix = b'{"event":"PAYMENT.CREATED","eventId":"' + uuid.uuid4().hex.encode() + b'","pad":"'
    suffix = b'"}'
    near = prefix + b"a" * (1048576 - 64 - len(prefix) - len(suffix)) + suffix
    r = endpoint.post(near)
    assert r.status == 200, r
    big = prefix + b"a" * (2 * 1048576) + suffix
    r = endpoint.post(big)
    assert r.status == 413, r
    assert r.json()["error"] == "payload_too_large"
    assert count_events(db, endpoint.name) == 1


def test_query_string_is_ignored(endpoint):
    body = unique_body()
    r = endpoint.post(body, url=endpoint.url + "?source=ipayout")
    assert r.status == 200, r


def test_concurrent_copies_give_one_accepted(endpoint, db):
    from concurrent.futures import ThreadPoolExecutor
    body = unique_body()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: endpoint.post(body), range(20)))
    statuses = sorted(r.json()["status"] for r in results)
    assert all(r.status == 200 for r in results), results
    assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 19
    assert len({r.json()["id"] for r in results}) == 1
    assert count_events(db, endpoint.name) == 1


def test_log_has_no_secrets(stack, endpoint):
    endpoint.post(unique_body(secret_field="do-not-log-me"))
    log = stack.log()
    token = endpoint.url.rsplit("/", 1)[1]
    assert token not in log
    assert endpoint.key not in log
    assert "do-not-log-me" not in log
    assert f"endpoint={endpoint.name}" in log
