# shellcheck shell=bash
# Shared helpers for scripts/up, scripts/test and scripts/stack. Source it; it
# sets no shell options of its own and works under `set -euo pipefail`.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Root's PATH may lack the sbin directories on minimal images; runuser and nginx
# live there.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

# Everything the project needs to build, test and run its dev stack, as Debian 12
# package names. Keep this the one list: CI runs on a fresh machine.
IPAYOUT_PACKAGES=(
  build-essential cmake pkg-config
  libfcgi-dev libsimdjson-dev libpqxx-dev libspdlog-dev libfmt-dev libssl-dev
  libgtest-dev libsystemd-dev
  postgresql-15 postgresql-client-15 nginx-light spawn-fcgi libfcgi-bin systemd procps
  pgbouncer  # tests/integration/test_pgbouncer.py
  openssl curl python3 python3-pytest python3-psycopg2 clang-format
  clang libclang-rt-14-dev llvm  # tests/fuzz (libFuzzer, sanitizers), symbolized reports
  wrk linux-perf  # bench/run (load) and profiling
  python3-matplotlib valgrind  # bench/curves.py (its plot), bench/ingest_cost.py --callgrind
  slowhttptest iproute2  # tests/integration/test_edge.py (slow clients; ss)
  nodejs  # examples/node (tests/integration/test_examples.py)
  # tests/integration/test_prometheus.py, bench/consumer_lag.py; promtool is in prometheus.
  # Under systemd their postinst also starts the system services (:9090, :9187);
  # the test runs its own instances on other ports and does not use those.
  prometheus prometheus-postgres-exporter python3-yaml
)
# examples/node needs npm too. Debian's npm conflicts with a nodejs package that
# bundles its own (NodeSource's, which CI machines may have): add it only when
# no npm is on the PATH.
command -v npm >/dev/null 2>&1 || IPAYOUT_PACKAGES+=(npm)

die() {
  printf '%s: error: %s\n' "${0##*/}" "$*" >&2
  exit 1
}

note() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
}

# Installs whatever of IPAYOUT_PACKAGES is missing. Checking costs one
# dpkg-query; apt-get update runs only when something has to be installed, and at
# most once per shell.
ensure_packages() {
  local -A installed=()
  local pkg state missing=()
  # dpkg-query prints nothing for packages it has never heard of and exits 1,
  # so its status is ignored and absence from the output means "missing".
  while read -r pkg state; do
    [ "$state" = installed ] && installed["$pkg"]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${IPAYOUT_PACKAGES[@]}" 2>/dev/null || true)
  for pkg in "${IPAYOUT_PACKAGES[@]}"; do
    [ -n "${installed[$pkg]:-}" ] || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0

  if [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages: ${missing[*]}
  install them as root:  apt-get install ${missing[*]}"
  fi
  note "installing missing packages: ${missing[*]}"
  # Lock timeout: wait (bounded) for another apt run instead of failing at once.
  # Output goes to stderr: callers such as `stack start` keep stdout machine-readable.
  local apt_opts=(-q -y -o DPkg::Lock::Timeout=300
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if [ -z "${_IPAYOUT_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >&2
    _IPAYOUT_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >&2
}

# Configures once (later builds re-run cmake by themselves when CMakeLists.txt
# changes), then builds. A configure that failed half-way leaves a cache but no
# build system, hence both checks. The worker ends up at
# $ROOT/build/handler/ipayout-webhookd.
build_project() {
  if [ ! -f "$ROOT/build/CMakeCache.txt" ] ||
    { [ ! -f "$ROOT/build/Makefile" ] && [ ! -f "$ROOT/build/build.ninja" ]; }; then
    cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  fi
  cmake --build "$ROOT/build" -j"$(nproc)"
}

# The dev/test stack's settings, from the environment with defaults. scripts/stack
# and scripts/up both call this so they agree on every path and port.
# shellcheck disable=SC2034  # the variables are for the scripts that call this
stack_config() {
  STATE="${IPAYOUT_STATE_DIR:-$ROOT/.run/dev}"
  PG_PORT="${IPAYOUT_PG_PORT:-15433}"  # below 32768: never a kernel-chosen client port
  HTTPS_PORT="${IPAYOUT_HTTPS_PORT:-8443}"
  HTTP_PORT="$((HTTPS_PORT + 1))"
  OPERATOR_PORT="$((HTTPS_PORT + 2))"  # metrics and health, loopback only
  BIN="${IPAYOUT_BIN:-$ROOT/build/handler/ipayout-webhookd}"

  # Relative paths would break once a command runs from another directory.
  case "$STATE" in /*) ;; *) STATE="$PWD/$STATE" ;; esac
  case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac

  BASE_URL="https://127.0.0.1:$HTTPS_PORT"
  HTTP_BASE_URL="http://127.0.0.1:$HTTP_PORT"
  METRICS_URL="http://127.0.0.1:$OPERATOR_PORT/ipayout/metrics"
  HEALTH_URL="http://127.0.0.1:$OPERATOR_PORT/ipayout/health"
  # IPAYOUT_PG_HOSTS (host:port,host:port,...): use PostgreSQL servers that run
  # already (a Patroni cluster, say) instead of starting one. Every URL then
  # names all of them and asks libpq for the writable one, so the pool and
  # migrate follow a failover. The database "ipayout" must exist there.
  PG_EXTERNAL="${IPAYOUT_PG_HOSTS:-}"
  local hosts="127.0.0.1:$PG_PORT" query=""
  if [ -n "$PG_EXTERNAL" ]; then
    hosts="$PG_EXTERNAL"
    query="?target_session_attrs=read-write&connect_timeout=2"
  fi
  DATABASE_URL="postgresql://postgres@$hosts/ipayout$query"
  WORKER_DATABASE_URL="postgresql://ipayout_webhookd@$hosts/ipayout$query"
  CONSUMER_DATABASE_URL="postgresql://ipayout_consumer@$hosts/ipayout$query"
  FCGI_SOCKET="$STATE/fcgi.sock"
  CA_CERT="$STATE/nginx/cert.pem"
}
