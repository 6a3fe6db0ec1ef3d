"""How the pool gets its socket (spawn-fcgi, systemd socket activation), tells
systemd it is ready, and replaces a worker that dies."""
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from webhook import BIN, create_endpoint, fcgi, stop_process


def fcgi_get(sock_path):
    """A GET on the webhook path, straight to the pool: a worker answers 405."""
    return fcgi(sock_path, "GET", "/ipayout/webhooks/x", timeout=10).text


def wait_for(predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def worker_url(stack):
    return stack.info["WORKER_DATABASE_URL"]


def test_spawn_fcgi_socket_on_fd0(stack, tmp_path):
    sock = str(tmp_path / "spawn.sock")
    log = open(tmp_path / "log", "w+")
    proc = subprocess.Popen(["spawn-fcgi", "-n", "-s", sock, "--", str(BIN), "serve",
                             "--workers=1", "--threads=2", f"--database={worker_url(stack)}"],
                            stdout=log, stderr=log)
    try:
        assert wait_for(lambda: Path(sock).exists(), 10)
        out = fcgi_get(sock)
        assert "Status: 405" in out and "Allow: POST" in out, out
    finally:
        stop_process(proc)
    log.seek(0)
    text = log.read()
    assert "inherited socket on fd 0" in text, text
    assert proc.returncode == 0


def test_systemd_socket_activation_and_readiness(stack, tmp_path):
    sock = str(tmp_path / "activated.sock")
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(10)
    log = open(tmp_path / "log", "w+")
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    # systemd-socket-activate passes on only the variables named with -E.
    proc = subprocess.Popen(["systemd-socket-activate", "-l", sock, "-E", "NOTIFY_SOCKET",
                             str(BIN), "serve",
                             "--workers=1", "--threads=2", f"--database={worker_url(stack)}"],
                            stdout=log, stderr=log, env=env)
    try:
        assert wait_for(lambda: Path(sock).exists(), 10)
        out = fcgi_get(sock)  # the first connection starts the daemon
        assert "Status: 405" in out, out
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())
    finally:
        stop_process(proc)
        notify.close()
    log.seek(0)
    assert "socket from systemd" in log.read()


def test_not_ready_while_database_is_down(tmp_path):
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(2)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, PGCONNECT_TIMEOUT="1")
    proc = subprocess.Popen([str(BIN), "serve", f"--listen={tmp_path}/s.sock", "--workers=1",
                             "--threads=1", "--database=postgresql://nobody@127.0.0.1:1/none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        with pytest.raises(socket.timeout):
            while True:
                assert "READY=1" not in notify.recv(4096).decode()
        assert proc.poll() is None, "the pool must keep running (answering 503) without a database"
    finally:
        stop_process(proc)
        notify.close()


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(x) for x in out.split()}


def test_killed_worker_is_replaced(stack):
    ep = create_endpoint(stack, "kill-" + uuid.uuid4().hex[:8])
    master = stack.pool_pid()
    before = children(master)
    assert before, "the pool has no workers"
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    started = time.time()
    assert wait_for(lambda: len(children(master)) == len(before) and victim not in children(master), 5)
    print(f"replaced in {time.time() - started:.2f}s")
    body = ('{"event":"PAYMENT.CREATED","eventId":"%s"}' % uuid.uuid4()).encode()
    assert wait_for(lambda: ep.post(body).status == 200, 10)
    assert "worker killed, replacing it" in stack.log()
