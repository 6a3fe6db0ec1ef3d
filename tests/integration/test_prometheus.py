"""Prometheus, for real: Debian's prometheus scrapes the stack's operator
endpoint and Debian's prometheus-postgres-exporter (with the shipped query file
monitoring/postgres-exporter/ipayout-queries.yaml) every second, loads the
shipped alerting rules, and the tests read the series back through its HTTP
API. Also: `promtool check metrics` on the exposition, `promtool test rules` on
the rules, and every metric name in the Grafana dashboard and the rules checked
against real scrapes.

Ports (loopback): IPAYOUT_TEST_PROMETHEUS_PORT [29090] and
IPAYOUT_TEST_EXPORTER_PORT [29187]."""
import json
import os
import re
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
import yaml

from webhook import ROOT, create_endpoint, post_event, request, stop_process, wait_readable

MONITORING = ROOT / "monitoring"
RULES = MONITORING / "prometheus" / "ipayout-alerts.yml"
RULES_TEST = MONITORING / "prometheus" / "ipayout-alerts.test.yml"
DASHBOARD = MONITORING / "grafana" / "ipayout-webhook.json"
QUERIES = MONITORING / "postgres-exporter" / "ipayout-queries.yaml"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
EXPORTER = "/usr/bin/prometheus-postgres-exporter"
POOL_JOB = "ipayout-webhook"  # the job name the rules' IpayoutPoolDown expects
EXPORTER_JOB = "ipayout-postgres"
EXPORTER_ROLE = "ipayout_test_exporter"


def wait_http(url, proc, log, timeout=30):
    deadline = time.time() + timeout
    while True:
        assert proc.poll() is None, f"{proc.args[0]} exited:\n{Path(log).read_text()}"
        try:
            if request(url, method="GET", timeout=5).status == 200:
                return
        except OSError:
            pass
        assert time.time() < deadline, f"{url} never answered:\n{Path(log).read_text()}"
        time.sleep(0.2)


class Monitoring:
    def __init__(self, prometheus_url, exporter_url):
        self.prometheus_url, self.exporter_url = prometheus_url, exporter_url

    def query(self, promql):
        """An instant query through Prometheus's HTTP API: {labels: value}."""
        r = request(self.prometheus_url + "/api/v1/query?" +
                    urllib.parse.urlencode({"query": promql}), method="GET")
        assert r.status == 200, (promql, r)
        data = r.json()
        assert data["status"] == "success", (promql, data)
        assert data["data"]["resultType"] == "vector", (promql, data)
        return {tuple(sorted(s["metric"].items())): float(s["value"][1])
                for s in data["data"]["result"]}

    def value(self, promql):
        """The value of a query that must return one series, or None if it returns none."""
        result = self.query(promql)
        assert len(result) <= 1, (promql, result)
        return next(iter(result.values()), None)

    def wait_value(self, promql, want, timeout=30):
        """Scrapes are every second: wait for Prometheus to have the value."""
        deadline = time.time() + timeout
        while True:
            got = self.value(promql)
            if got == want:
                return got
            assert time.time() < deadline, f"{promql} = {got}, expected {want}"
            time.sleep(0.25)


@pytest.fixture(scope="module")
def monitoring(stack, tmp_path_factory):
    prom_port = int(os.environ.get("IPAYOUT_TEST_PROMETHEUS_PORT", "29090"))
    exporter_port = int(os.environ.get("IPAYOUT_TEST_EXPORTER_PORT", "29187"))
    operator = urllib.parse.urlsplit(stack.info["METRICS_URL"])
    work = tmp_path_factory.mktemp("prometheus")

    # The exporter's login: in ipayout_monitor only (sql/004), as docs/monitoring.md says.
    conn = psycopg2.connect(stack.database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (EXPORTER_ROLE,))
        if not cur.fetchone():
            cur.execute(f"CREATE ROLE {EXPORTER_ROLE} LOGIN IN ROLE ipayout_monitor")
    conn.close()
    pg_port = urllib.parse.urlsplit(stack.database_url).port
    exporter_log = work / "exporter.log"
    exporter = subprocess.Popen(
        [EXPORTER, f"--web.listen-address=127.0.0.1:{exporter_port}",
         f"--extend.query-path={QUERIES}", "--disable-default-metrics",
         "--disable-settings-metrics"],
        env=dict(os.environ, DATA_SOURCE_NAME=f"postgresql://{EXPORTER_ROLE}@127.0.0.1:{pg_port}"
                                              "/ipayout?sslmode=disable"),
        stdout=open(exporter_log, "w"), stderr=subprocess.STDOUT)
    prometheus = None
    try:
        exporter_url = f"http://127.0.0.1:{exporter_port}/metrics"
        wait_http(exporter_url, exporter, exporter_log)

        config = work / "prometheus.yml"
        config.write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES}
scrape_configs:
  - job_name: {POOL_JOB}
    metrics_path: {operator.path}
    static_configs:
      - targets: ["{operator.hostname}:{operator.port}"]
  - job_name: {EXPORTER_JOB}
    static_configs:
      - targets: ["127.0.0.1:{exporter_port}"]
""")
        prom_log = work / "prometheus.log"
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=open(prom_log, "w"), stderr=subprocess.STDOUT, cwd=work)
        prometheus_url = f"http://127.0.0.1:{prom_port}"
        wait_http(prometheus_url + "/-/ready", prometheus, prom_log)
        m = Monitoring(prometheus_url, exporter_url)
        # Both targets scraped at least once before any test reads series.
        m.wait_value(f'up{{job="{POOL_JOB}"}}', 1)
        m.wait_value(f'up{{job="{EXPORTER_JOB}"}}', 1)
        yield m
    finally:
        if prometheus:
            stop_process(prometheus)
        stop_process(exporter)


@pytest.fixture
def consumer(stack):
    """A named consumer (from the end of the feed) with a pattern of its own,
    so other tests' events never count as its lag; unsubscribed afterwards."""
    tag = uuid.uuid4().hex[:10].upper()
    name, prefix = f"prom-{tag.lower()}", f"PROMLAG.{tag}."
    conn = psycopg2.connect(stack.database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT ipayout.subscribe(%s, 'end', %s)", (name, prefix + "%"))
    try:
        yield name, prefix, conn
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT ipayout.unsubscribe(%s)", (name,))
        conn.close()


def exposition(stack):
    r = request(stack.info["METRICS_URL"], method="GET")
    assert r.status == 200, r
    return r.body.decode()


def sample_names(text):
    """Metric names of the samples of an exposition (histograms: _bucket, _sum, _count)."""
    return {re.match(r"[A-Za-z_:][\w:]*", line).group(0)
            for line in text.splitlines() if line and not line.startswith("#")}


def test_prometheus_reads_back_what_the_pool_counted(stack, monitoring, db):
    ep = create_endpoint(stack, "prom-" + uuid.uuid4().hex[:8])
    event = f"PROMTEST.{uuid.uuid4().hex[:10].upper()}.PAID"
    sent = [post_event(ep, event=event)[1] for _ in range(7)]
    assert ep.post(json.dumps(sent[0]).encode()).json()["status"] == "duplicate"
    assert ep.post(b'{"event":"X"}', signature="x" * 44).status == 401

    accepted = f'ipayout_requests_total{{job="{POOL_JOB}", endpoint="{ep.name}", status="200"}}'
    monitoring.wait_value(accepted, 8)  # 7 stored + 1 duplicate, both answered 200
    stored = monitoring.wait_value(f'ipayout_events_total{{event="{event}"}}', 7)
    dups = monitoring.value(f'ipayout_duplicates_total{{endpoint="{ep.name}"}}')
    # What Prometheus holds is what the pool exposes and what the database has.
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM ipayout.events WHERE event = %s", (event,))
        assert cur.fetchone()[0] == stored == 7
    text = exposition(stack)
    assert f'ipayout_events_total{{event="{event}"}} 7\n' in text
    assert f'ipayout_requests_total{{endpoint="{ep.name}",status="200"}} 8\n' in text
    assert f'ipayout_duplicates_total{{endpoint="{ep.name}"}} 1\n' in text
    assert dups == 1
    # The probe of create_endpoint and the bad signature: two 401s.
    assert monitoring.wait_value(
        f'ipayout_requests_total{{endpoint="{ep.name}", status="401"}}', 2) == 2
    # Every worker's writer is connected, as the exposition says.
    workers = re.findall(r'^ipayout_db_connected\{worker="\d+"\} (\S+)$', text, re.M)
    assert workers and set(workers) == {"1"}, text
    assert monitoring.value(f'sum(ipayout_db_connected{{job="{POOL_JOB}"}})') == len(workers)
    assert monitoring.value(f'count(ipayout_db_connected{{job="{POOL_JOB}"}})') == len(workers)


def test_consumer_lag_reaches_prometheus_through_the_exporter(stack, monitoring, consumer):
    name, prefix, conn = consumer
    ep = create_endpoint(stack, "prom-lag-" + uuid.uuid4().hex[:8])
    ids = [post_event(ep, event=prefix + "PAID")[0] for _ in range(3)]
    post_event(ep, event="PROMOTHER." + uuid.uuid4().hex[:8])  # not its pattern: not its lag
    wait_readable(stack.database_url, ids)

    pending = f'ipayout_consumer_pending_events{{job="{EXPORTER_JOB}", consumer="{name}"}}'
    age = f'ipayout_consumer_oldest_pending_age_seconds{{consumer="{name}"}}'
    monitoring.wait_value(pending, 3)
    assert monitoring.value(f'ipayout_consumer_pending_capped{{consumer="{name}"}}') == 0
    # Age of the oldest of the three: positive, and not older than this test.
    with conn.cursor() as cur:
        cur.execute("SELECT pending, extract(epoch FROM lag) FROM ipayout.consumer_status()"
                    " WHERE consumer = %s", (name,))
        sql_pending, sql_lag = cur.fetchone()
    assert sql_pending == 3
    got_age = monitoring.value(age)
    assert 0 < got_age <= float(sql_lag) + 1

    with conn.cursor() as cur:
        cur.execute("SELECT ipayout.ack(%s, %s)", (name, max(ids)))
    monitoring.wait_value(pending, 0)
    monitoring.wait_value(age, 0)


def test_the_monitoring_role_reads_the_lag_and_nothing_else(stack, monitoring):
    pg_port = urllib.parse.urlsplit(stack.database_url).port
    conn = psycopg2.connect(f"postgresql://{EXPORTER_ROLE}@127.0.0.1:{pg_port}/ipayout")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM ipayout.consumer_lag(10)")
            for sql in ("SELECT 1 FROM ipayout.events LIMIT 1",
                        "SELECT 1 FROM ipayout.endpoints LIMIT 1",
                        "SELECT 1 FROM ipayout.consumers LIMIT 1",
                        "SELECT 1 FROM ipayout.consumer_status()",
                        "SELECT 1 FROM ipayout.poll('x')"):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(sql)
    finally:
        conn.close()


def test_promtool_check_metrics_passes_on_the_exposition(stack, monitoring, consumer):
    # consumer: the exporter has ipayout_consumer_* samples to lint.
    # Every family populated: requests, events, duplicates and histograms.
    ep = create_endpoint(stack, "prom-lint-" + uuid.uuid4().hex[:8])
    _, body = post_event(ep, event="PROMLINT.X")
    ep.post(json.dumps(body).encode())
    for text in (exposition(stack),
                 # The exporter's families from the shipped query file (the
                 # rest of its output is the exporter's own).
                 "\n".join(line for line in request(monitoring.exporter_url, method="GET")
                           .body.decode().splitlines()
                           if "ipayout_consumer_" in line) + "\n"):
        assert "# TYPE" in text
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        assert (p.returncode, p.stdout, p.stderr) == (0, "", ""), text[:2000]


def test_promtool_test_rules_passes():
    p = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 7 rules found" in p.stdout
    p = subprocess.run([PROMTOOL, "test", "rules", str(RULES_TEST)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def rule_alerts():
    """Every alert of the rules file: {name: expr}."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def test_every_alert_is_tested_and_loaded_in_prometheus(monitoring):
    alerts = rule_alerts()
    assert len(alerts) == 7
    tested = set(re.findall(r"alertname: (\S+)", RULES_TEST.read_text()))
    assert tested == set(alerts)
    # Prometheus loaded the file and evaluated every rule without an error.
    deadline = time.time() + 30
    while True:
        r = request(monitoring.prometheus_url + "/api/v1/rules", method="GET").json()
        rules = [rule for g in r["data"]["groups"] for rule in g["rules"]]
        if len(rules) == 7 and all(rule["health"] == "ok" and
                                   not rule["lastEvaluation"].startswith("0001")
                                   for rule in rules):
            break
        assert time.time() < deadline, rules
        time.sleep(0.5)
    assert {rule["name"] for rule in rules} == set(alerts)


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
                "and", "or", "unless", "inf", "nan"}


def metric_names(expr):
    """The metric names a PromQL expression selects: identifiers that are not
    functions, keywords, label names or inside strings, ranges or Grafana
    variables."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        if not m.group(2) and m.group(1).lower() not in PROMQL_WORDS:
            names.add(m.group(1))
    return names


def test_metric_names_finds_selectors_only():
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y z"}'
                        '[$__rate_interval]))) / on() b offset 6h > 0.5 unless c') == {
                            "a_bucket", "b", "c"}


def dashboard_queries():
    """(PromQL expressions, metrics of label_values() variables) of the dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))
    walk(dash["panels"])
    variables = set()
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", q)
            assert m, q
            variables.add(m.group(1))
    return exprs, variables


def test_dashboard_and_rules_name_only_metrics_the_scrapes_have(stack, monitoring, consumer):
    # consumer: one exists, so the exporter's ipayout_consumer_* series exist.
    name = consumer[0]
    monitoring.wait_value(f'count(ipayout_consumer_pending_events{{consumer="{name}"}})', 1)
    # Traffic, so that every family of the pool has samples (a counter with
    # labels has none before its first increment), scraped by Prometheus.
    ep = create_endpoint(stack, "prom-names-" + uuid.uuid4().hex[:8])
    _, body = post_event(ep, event="PROMNAMES.X")
    ep.post(json.dumps(body).encode())
    monitoring.wait_value(f'ipayout_duplicates_total{{endpoint="{ep.name}"}}', 1)
    exprs, variables = dashboard_queries()
    assert len(exprs) >= 15
    rules = rule_alerts()
    exposed = (sample_names(exposition(stack)) |
               sample_names(request(monitoring.exporter_url, method="GET").body.decode()))
    wanted = set(variables)
    for expr in exprs + list(rules.values()):
        names = metric_names(expr)
        assert names, expr
        wanted |= names
        # Prometheus parses and evaluates it (Grafana's variables filled in).
        monitoring.query(expr.replace("$__rate_interval", "1m").replace("$instance", ".*"))
    # `up` is Prometheus's own series for each target, not in any exposition.
    missing = {n for n in wanted - {"up"} if n not in exposed}
    assert not missing, f"not in the pool's or the exporter's scrape: {sorted(missing)}"
    assert "up" not in wanted or monitoring.value(f'up{{job="{POOL_JOB}"}}') == 1
    for n in wanted:
        assert monitoring.query(f'count({{__name__="{n}"}})'), f"Prometheus has no {n}"
    # Every pool family is on the dashboard (a new metric gets a panel).
    families = set(re.findall(r"^# TYPE (\S+) ", exposition(stack), re.M))
    on_dashboard = {n for e in exprs for n in metric_names(e)}
    stems = {re.sub(r"_(bucket|sum|count)$", "", n) for n in on_dashboard}
    assert families <= on_dashboard | stems, sorted(families - on_dashboard - stems)
