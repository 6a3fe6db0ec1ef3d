"""The edge as shipped: nginx with the example site and the snippet (rendered
by scripts/stack) keeps deliveries flowing while one address misbehaves:
thousands of slow connections (slowhttptest: slow headers, slow body, slow
read), or a flood of requests. The attacker connects from ATTACKER, deliveries
come from DELIVERY (two loopback addresses, as two hosts would be); the site
does not limit this host's own address, 127.0.0.1 (local tools and load tests),
so neither is that."""
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from webhook import ROOT, request

ATTACKER = "127.0.0.3"
DELIVERY = "127.0.0.2"
# The plain build's: the shim must not carry a sanitizer runtime into slowhttptest.
SHIM = ROOT / "build" / "tests" / "bind_source.so"

# slowhttptest's modes. Slow body: a 64 KiB Content-Length sent a few bytes
# every -i seconds. Slow read: a tiny receive window, read a few bytes a second,
# the request repeated on the connection so the answers outgrow the buffers.
MODES = {
    "slow-headers": ["-H"],
    "slow-body": ["-B", "-s", "65536"],
    "slow-read": ["-X", "-k", "10", "-n", "1", "-w", "1", "-y", "16", "-z", "4"],
}
ATTACK_CONNECTIONS = 3000
ATTACK_RATE = 600  # new connections per second


def attacker_connections(port):
    """Established TCP connections from ATTACKER to nginx's port right now."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "src", ATTACKER,
                          "dst", f"127.0.0.1:{port}"], capture_output=True, text=True).stdout
    return len(out.splitlines())


class Deliveries(threading.Thread):
    """Signed deliveries from DELIVERY, one new TLS connection each (as a
    webhook sender makes them), every `interval` seconds until stopped."""

    def __init__(self, endpoint, interval=0.1):
        super().__init__(daemon=True)
        self.endpoint, self.interval = endpoint, interval
        self.results = []  # (status or exception text, seconds)
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            body = ('{"event":"PAYMENT.COMPLETED","eventId":"%s"}' % uuid.uuid4()).encode()
            t0 = time.monotonic()
            try:
                status = self.endpoint.post(body, source=DELIVERY, timeout=10).status
            except OSError as e:
                status = f"{type(e).__name__}: {e}"
            self.results.append((status, time.monotonic() - t0))
            self.halt.wait(self.interval)

    def stop(self):
        self.halt.set()
        self.join(30)
        return self.results


@pytest.fixture(scope="module")
def slowhttptest():
    path = shutil.which("slowhttptest")
    assert path, "slowhttptest is missing (scripts/lib.sh installs it)"
    assert SHIM.exists(), f"{SHIM} is missing (built with the tests)"
    return path


@pytest.mark.parametrize("mode", sorted(MODES))
def test_deliveries_flow_while_one_address_holds_slow_connections(stack, endpoint, mode,
                                                                  slowhttptest):
    port = int(stack.base_url.rsplit(":", 1)[1])
    seconds = 20
    attack = subprocess.Popen(
        [slowhttptest, *MODES[mode], "-c", str(ATTACK_CONNECTIONS), "-r", str(ATTACK_RATE),
         "-i", "10", "-l", str(seconds + 5), "-p", "3", "-v", "1",
         "-u", stack.base_url + "/ipayout/webhooks/" + "A" * 43],
        env=dict(os.environ, LD_PRELOAD=str(SHIM), IPAYOUT_BIND_SOURCE=ATTACKER),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deliveries = Deliveries(endpoint)
    held = []
    try:
        time.sleep(3)  # the attack ramps up
        deliveries.start()
        deadline = time.monotonic() + seconds - 3
        while time.monotonic() < deadline:
            held.append(attacker_connections(port))
            time.sleep(1)
    finally:
        results = deliveries.stop()
        attack.terminate()
        out = attack.communicate(timeout=30)[0]
    failed = [r for r in results if r[0] != 200]
    slowest = max(t for _, t in results)
    print(f"{mode}: {len(results)} deliveries from {DELIVERY}, {len(failed)} not 200, "
          f"slowest {slowest:.3f} s; attacker {ATTACKER} held up to {max(held)} connections "
          f"(median {sorted(held)[len(held) // 2]})")
    # The attack happened, from the attacker's address: without that, nothing is shown.
    assert max(held) >= 100, f"the attack never held connections:\n{out[-2000:]}"
    assert len(results) >= 100
    assert not failed, failed[:10]
    assert slowest < 1.0


def test_a_flood_from_one_address_gets_429_and_others_get_through(stack, endpoint):
    """limit_req per address: a burst far above the site's rate from ATTACKER
    gets JSON 429s with Retry-After; a delivery from DELIVERY meanwhile is 200."""
    flood_url = stack.base_url + "/ipayout/webhooks/" + "B" * 43
    statuses, bodies = [], []

    def flood():
        for _ in range(400):
            r = request(flood_url, body=b"{}", headers={"Content-Type": "application/json"},
                        ca=stack.ca, source=ATTACKER)
            statuses.append(r.status)
            if r.status == 429:
                bodies.append((r.headers.get("retry-after"), r.json()))

    t = threading.Thread(target=flood)
    t.start()
    delivered = []
    while t.is_alive():
        body = ('{"event":"PAYMENT.COMPLETED","eventId":"%s"}' % uuid.uuid4()).encode()
        delivered.append(endpoint.post(body, source=DELIVERY).status)
        time.sleep(0.05)
    t.join()
    print(f"flood: {statuses.count(429)} of {len(statuses)} answered 429, "
          f"{statuses.count(404)} reached the worker (404); deliveries: {delivered}")
    assert statuses.count(429) > 0
    assert set(statuses) <= {404, 429}
    assert bodies[0] == ("1", {"error": "rate_limited", "message": "too many requests, retry later"})
    assert delivered and set(delivered) == {200}


def set_site(stack, text):
    (Path(stack.info["STATE_DIR"]) / "nginx" / "site.conf").write_text(text)
    stack.run("nginx-reload")


def test_source_allow_list_is_off_by_default_and_refuses_others_when_on(stack, endpoint):
    """The site's geo allow-list: as shipped every source delivers; with the
    edit its comment describes (default 0, allowed addresses listed with 1),
    only those do, and the others get 403 as JSON without reaching a worker."""
    body = lambda: ('{"event":"PAYMENT.COMPLETED","eventId":"%s"}' % uuid.uuid4()).encode()
    assert endpoint.post(body(), source=ATTACKER).status == 200  # off by default
    site = Path(stack.info["STATE_DIR"]) / "nginx" / "site.conf"
    shipped = site.read_text()
    old = "geo $ipayout_source_allowed {\n    default 1;\n"
    assert shipped.count(old) == 1, "the site's allow-list is not as this test knows it"
    try:
        set_site(stack, shipped.replace(old, "geo $ipayout_source_allowed {\n    default 0;\n"
                                        f"    127.0.0.1/32 1;\n    {DELIVERY}/32 1;\n"))
        refused = endpoint.post(body(), source=ATTACKER)
        assert refused.status == 403
        assert refused.json() == {"error": "forbidden", "message": "source address not allowed"}
        assert endpoint.post(body(), source=DELIVERY).status == 200
        assert endpoint.post(body()).status == 200  # 127.0.0.1
    finally:
        set_site(stack, shipped)
    assert endpoint.post(body(), source=ATTACKER).status == 200
