import os
import uuid

import psycopg2
import pytest

from webhook import ROOT, Stack, create_endpoint


@pytest.fixture(scope="session")
def stack():
    s = Stack(os.environ.get("IPAYOUT_TEST_STATE", ROOT / ".run" / "test"),
              os.environ.get("IPAYOUT_TEST_PG_PORT", "25432"),
              os.environ.get("IPAYOUT_TEST_HTTPS_PORT", "9443"))
    s.run("destroy")  # leftovers of an earlier run: start from an empty database
    s.run("start")
    yield s
    s.run("stop")


@pytest.fixture
def db(stack):
    conn = psycopg2.connect(stack.database_url)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def endpoint(stack):
    """A fresh endpoint (policy required) per test, so row counts are per test."""
    return create_endpoint(stack, "t-" + uuid.uuid4().hex[:12])


def count_events(db, endpoint_name, where="true", params=()):
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM ipayout.events e JOIN ipayout.endpoints p ON p.id = e.endpoint_id "
            f"WHERE p.name = %s AND ({where})", (endpoint_name, *params))
        return cur.fetchone()[0]
