"""The Debian package: built with CPack (cmake/packaging.cmake), installed with
dpkg into this machine, and the daemon run from it with the packaged
configuration file, as the packaged user, on the packaged socket path.

This installs into the system (/usr/bin, /etc/ipayout-webhook, /lib/systemd):
meant for CI machines, which are disposable. Needs root. The package is purged
afterwards, so the test can run again.

The package is built from the build tree of the binary under test (IPAYOUT_BIN,
default build/; never a sanitizer build), so in CI it costs one cpack run;
IPAYOUT_DEB_BUILD names another build tree (configured here, without tests, if
it does not exist yet)."""
import filecmp
import grp
import os
import pwd
import re
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from webhook import BIN, ROOT, fcgi, stop_process

PACKAGE = "ipayout-webhook"
SERVICE = "ipayout-webhookd.service"
UNIT_DIR = Path("/lib/systemd/system")
CONF = Path("/etc/ipayout-webhook/ipayout-webhookd.conf")
RUN_DIR = Path("/run/ipayout-webhook")
SOCKET = RUN_DIR / "fcgi.sock"
ENABLED_LINK = Path("/etc/systemd/system/sockets.target.wants/ipayout-webhookd.socket")
# `systemd-analyze security` exposure of the packaged service; the README quotes it.
MAX_EXPOSURE = 0.9

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a .deb with dpkg: needs root"),
    pytest.mark.skipif(not Path("/usr/bin/dpkg").exists(), reason="not a Debian system"),
]


def run(*cmd, check=True, timeout=600, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n"
                             f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def dpkg(*args):
    """dpkg, waiting (bounded) while apt or dpkg elsewhere holds the lock."""
    deadline = time.time() + 300
    while True:
        p = run("dpkg", *args, check=False)
        if p.returncode == 0:
            return p
        if "lock" not in p.stderr or time.time() > deadline:
            raise AssertionError(f"dpkg {' '.join(args)} failed ({p.returncode}):\n"
                                 f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        time.sleep(2)


def package_state():
    """'installed', 'config-files' (removed, not purged), ... or None (not there)."""
    p = run("dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE, check=False)
    state = p.stdout.strip() if p.returncode == 0 else ""
    return None if state in ("", "not-installed") else state


def purge():
    if package_state() is not None:
        dpkg("--purge", PACKAGE)


def plain_build_tree(tree):
    """A configured build tree without sanitizers or fuzzing instrumentation:
    what a package may be made from."""
    cache = tree / "CMakeCache.txt"
    if not cache.exists():
        return False
    text = cache.read_text(errors="replace")
    return (re.search(r"^IPAYOUT_SANITIZE:STRING=\s*$", text, re.M) is not None
            and not re.search(r"^IPAYOUT_BUILD_FUZZERS:BOOL=(ON|TRUE|1|YES)\s*$", text, re.M))


def build_dir():
    """IPAYOUT_DEB_BUILD; else the tree of the binary under test (IPAYOUT_BIN), or
    build/ when that one is a sanitizer build (scripts/test's second pass);
    else build-deb/, configured here."""
    if os.environ.get("IPAYOUT_DEB_BUILD"):
        return Path(os.environ["IPAYOUT_DEB_BUILD"]).resolve()
    for tree in (BIN.resolve().parent.parent, ROOT / "build"):
        if plain_build_tree(tree):
            return tree
    return ROOT / "build-deb"


def project_version():
    m = re.search(r"project\(ipayout-webhook VERSION (\S+)", (ROOT / "CMakeLists.txt").read_text())
    return m.group(1)


@pytest.fixture(scope="module")
def deb():
    build = build_dir()
    if not (build / "CMakeCache.txt").exists():
        run("cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
            "-DIPAYOUT_BUILD_TESTS=OFF")
    # Up to date already in CI (scripts/test built this tree); re-runs cmake if
    # the packaging changed.
    run("cmake", "--build", build, f"-j{os.cpu_count() or 2}")
    out = Path(tempfile.mkdtemp(prefix="ipayout-deb."))
    run("cpack", "-G", "DEB", "-B", out, cwd=build)
    arch = run("dpkg", "--print-architecture").stdout.strip()
    path = out / f"{PACKAGE}_{project_version()}_{arch}.deb"
    assert path.exists(), sorted(p.name for p in out.iterdir())
    assert path.name in (ROOT / "README.md").read_text(), f"README.md does not name {path.name}"
    yield {"path": path, "build": build}
    run("rm", "-rf", out)


@pytest.fixture(scope="module")
def installed(deb):
    purge()  # leftovers of an interrupted run
    # Debian leaves system users behind on purge; remove ours so that this run
    # shows postinst creating it.
    if run("getent", "passwd", "ipayout-webhook", check=False).returncode == 0:
        run("userdel", "ipayout-webhook")
    p = dpkg("-i", deb["path"])
    try:
        yield {**deb, "install_output": p.stdout + p.stderr}
    finally:
        purge()


def mode_owner(path):
    st = os.stat(path)
    return (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name)


def expected_files(build):
    """Installed path -> source file, for every file the package must ship."""
    files = {
        "/usr/bin/ipayout-webhookd": None,
        "/lib/systemd/system/ipayout-webhookd.service": "systemd/ipayout-webhookd.service",
        "/lib/systemd/system/ipayout-webhookd.socket": "systemd/ipayout-webhookd.socket",
        "/usr/lib/sysusers.d/ipayout-webhook.conf": "systemd/ipayout-webhook.sysusers",
        "/usr/lib/tmpfiles.d/ipayout-webhook.conf": "systemd/ipayout-webhook.tmpfiles",
        "/etc/nginx/snippets/ipayout-webhook.conf": "nginx/ipayout-webhook.conf",
        "/etc/nginx/snippets/ipayout-operator.conf": "nginx/ipayout-operator.conf",
        "/usr/share/doc/ipayout-webhook/examples/nginx-site.conf": "nginx/example-site.conf",
        "/usr/share/doc/ipayout-webhook/README.md": "README.md",
        str(CONF): "systemd/ipayout-webhookd.conf.example",
    }
    for sql in sorted((ROOT / "sql").glob("*.sql")):
        files[f"/usr/share/ipayout-webhook/sql/{sql.name}"] = f"sql/{sql.name}"
    for f in sorted(f for f in (ROOT / "monitoring").rglob("*") if f.is_file()):
        rel = f.relative_to(ROOT)
        files[f"/usr/share/ipayout-webhook/{rel}"] = str(rel)
    if (build / "cli" / "ipayout-events").exists():  # the target exists in this tree
        files["/usr/bin/ipayout-events"] = None
        for unit in ("ipayout-events-purge.service", "ipayout-events-purge.timer"):
            if (ROOT / "systemd" / unit).exists():
                files[f"/lib/systemd/system/{unit}"] = f"systemd/{unit}"
    return files


def test_files_modes_and_owners(installed):
    for path, source in expected_files(installed["build"]).items():
        assert Path(path).is_file(), f"{path} not installed"
        if path.startswith("/usr/bin/"):
            assert mode_owner(path) == (0o755, "root", "root"), path
        elif path == str(CONF):
            # Holds the database conninfo: the service's group may read it, others not.
            assert mode_owner(path) == (0o640, "root", "ipayout-webhook"), path
        else:
            assert mode_owner(path) == (0o644, "root", "root"), path
        if source:
            assert filecmp.cmp(path, ROOT / source, shallow=False), f"{path} differs from {source}"

    version = run("/usr/bin/ipayout-webhookd", "--version").stdout
    assert version.strip() == f"ipayout-webhookd {project_version()}"
    if Path("/usr/bin/ipayout-events").exists():
        assert run("/usr/bin/ipayout-events", "--version").returncode == 0

    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout
    assert {line.split()[0] for line in conffiles.strip().splitlines()} == {
        str(CONF), "/etc/nginx/snippets/ipayout-webhook.conf",
        "/etc/nginx/snippets/ipayout-operator.conf"}

    depends = run("dpkg-query", "-W", "-f=${Depends}", PACKAGE).stdout
    for lib in ("libpqxx-6.4", "libpq5", "libfcgi0ldbl", "libspdlog1.10", "libsimdjson14",
                "libssl3", "libsystemd0"):
        assert re.search(rf"(^|, ){re.escape(lib)}[ ,(-]|(^|, ){re.escape(lib)}$", depends), \
            f"{lib} missing from Depends: {depends}"


def test_postinst_created_user_directory_and_enabled_the_socket(installed):
    user = pwd.getpwnam("ipayout-webhook")
    assert user.pw_dir == "/nonexistent" and user.pw_shell.endswith("nologin"), user
    assert grp.getgrgid(user.pw_gid).gr_name == "ipayout-webhook"
    assert user.pw_uid < 1000, "a system user"
    # tmpfiles: nginx (group www-data) may enter the socket's directory, others not.
    assert RUN_DIR.is_dir()
    assert mode_owner(RUN_DIR) == (0o750, "ipayout-webhook", "www-data")
    # Enabled for the next boot even without a running systemd (dh_installsystemd's way).
    assert ENABLED_LINK.is_symlink()
    assert os.readlink(ENABLED_LINK) == str(UNIT_DIR / "ipayout-webhookd.socket")


def test_units_verify_and_security_exposure(installed):
    units = sorted(UNIT_DIR.glob("ipayout-*"))
    assert UNIT_DIR / SERVICE in units
    p = run("systemd-analyze", "verify", *units, check=False)
    # Warnings about unknown or malformed settings do not change the status: none allowed.
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p.stderr

    p = run("systemd-analyze", "security", "--offline=yes", UNIT_DIR / SERVICE,
            check=False, env=dict(os.environ, SYSTEMD_COLORS="0"))
    m = re.search(rf"Overall exposure level for {re.escape(SERVICE)}: (\d+\.\d+)", p.stdout)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, p.stdout
    readme = (ROOT / "README.md").read_text()
    assert f"Overall exposure level for {SERVICE}: {m.group(1)}" in readme, \
        f"README.md does not quote the score systemd-analyze gives ({m.group(1)})"


def test_packaged_daemon_serves_with_packaged_config(installed, stack, tmp_path):
    """No systemd here: run ExecStart's command line as the unit's User=, with the
    database pointed at the test stack through the environment (as an
    EnvironmentFile= would)."""
    unit = (UNIT_DIR / SERVICE).read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    assert exec_start == ["/usr/bin/ipayout-webhookd", "serve", f"--config={CONF}"]
    assert re.search(r"^User=ipayout-webhook$", unit, re.M)

    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "IPAYOUT_DATABASE": stack.info["WORKER_DATABASE_URL"]}
    log = open(tmp_path / "daemon.log", "w+")
    proc = subprocess.Popen(["setpriv", "--reuid=ipayout-webhook", "--regid=ipayout-webhook",
                             "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
                             "--no-new-privs", *exec_start],
                            env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def log_text():
        if not log.closed:
            log.flush()
        return (tmp_path / "daemon.log").read_text(errors="replace")

    try:
        deadline = time.time() + 15
        health = ""
        while time.time() < deadline and proc.poll() is None:
            health = fcgi(SOCKET, "GET", "/ipayout/health", timeout=10).text
            if "Status: 200" in health:
                break
            time.sleep(0.1)
        assert "Status: 200" in health and '{"status":"ready"}' in health, \
            f"{health}\n{log_text()}"
        # The packaged listen setting: the tmpfiles directory, the service user's socket.
        assert f"listen={SOCKET}" in log_text()
        assert stat.S_ISSOCK(os.stat(SOCKET).st_mode)
        assert pwd.getpwuid(os.stat(SOCKET).st_uid).pw_name == "ipayout-webhook"

        put = fcgi(SOCKET, "PUT", "/ipayout/webhooks/x", timeout=10).text
        assert "Status: 405" in put and "Allow: POST" in put, put
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode == 0, log_text()
    assert "level=error" not in log_text()


def test_reinstall_remove_and_purge(installed):
    """Runs last: an admin's config edit survives a reinstall (a conffile), remove
    keeps configuration, purge takes everything but the system user."""
    with open(CONF, "a") as f:
        f.write("# edited by the administrator\n")
    dpkg("-i", installed["path"])  # postinst configure <old version>: the upgrade path
    assert CONF.read_text().endswith("# edited by the administrator\n")
    assert mode_owner(CONF) == (0o640, "root", "ipayout-webhook")

    files = expected_files(installed["build"])
    dpkg("--remove", PACKAGE)
    assert package_state() == "config-files"
    for path in files:
        if path.startswith("/etc/"):
            assert Path(path).exists(), f"remove must keep the conffile {path}"
        else:
            assert not Path(path).exists(), f"{path} left after remove"

    dpkg("--purge", PACKAGE)
    assert package_state() is None
    for path in files:
        assert not Path(path).exists(), f"{path} left after purge"
    assert not CONF.parent.exists()
    assert not ENABLED_LINK.is_symlink()
    assert not RUN_DIR.exists()
    # Debian keeps system users: files they owned may outlive the package.
    assert run("getent", "passwd", "ipayout-webhook", check=False).returncode == 0
