"""Checks the deploy kit against the code: every metric the alert rules and the Grafana
dashboard use is one the services declare, the compose file and Prometheus config parse
and point at the ports the services listen on. (Nothing here runs Docker: CI has none.)
Run from the repository root with a Python that has PyYAML."""
import glob
import json
import re
import sys

import yaml

declared = set()
for path in glob.glob("services/*/src/**/*.rs", recursive=True) + glob.glob("crates/*/src/**/*.rs", recursive=True):
    for name in re.findall(r'"(smsgw_[a-z_]+)"', open(path).read()):
        declared.add(name)
        if name.endswith("_records_total"):
            # ConsumerMetrics::register derives the lag gauge from the counter's name.
            declared.add(name[: -len("_records_total")] + "_consumer_lag_seconds")
        if name.endswith("_seconds"):
            declared.update({name + "_bucket", name + "_count", name + "_sum"})

failures = []


def uses(expr):
    names = set(re.findall(r"\b(smsgw_[a-z_]+)\b", expr))
    patterns = re.findall(r'__name__=~"([^"]+)"', expr)
    return names - {p for p in names if any(p in q for q in patterns)}, patterns


def check_expr(where, expr):
    names, patterns = uses(expr)
    for n in names:
        if n not in declared:
            failures.append(f"{where}: {n} is not a metric any service declares")
    for p in patterns:
        if not any(re.fullmatch(p, d) for d in declared):
            failures.append(f"{where}: pattern {p} matches no declared metric")


rules = yaml.safe_load(open("deploy/prometheus/alerts.yml"))
alerts = [r for g in rules["groups"] for r in g["rules"]]
for r in alerts:
    check_expr(r["alert"], r["expr"])
    if "runbook" not in r.get("annotations", {}):
        failures.append(f"{r['alert']}: no runbook")
for wanted in ["SmsgwCarrierDown", "SmsgwConsumerLagGrowing", "SmsgwDeliveryRateFalling"]:
    if wanted not in {r["alert"] for r in alerts}:
        failures.append(f"missing alert {wanted}")

dash = json.load(open("deploy/grafana/smsgw-dashboard.json"))
for p in dash["panels"]:
    for t in p["targets"]:
        check_expr(f"panel {p['title']!r}", t["expr"])

compose = yaml.safe_load(open("deploy/compose/docker-compose.yml"))
for svc in ["kafka", "scylla", "ingest", "router", "dispatcher", "receipt", "optout", "smpp-server", "carrier-sim", "prometheus", "grafana"]:
    if svc not in compose["services"]:
        failures.append(f"compose: no {svc}")
targets = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))["scrape_configs"][0]["static_configs"][0]["targets"]
for t in ["ingest:9100", "router:9101", "dispatcher:9102", "receipt:9103", "optout:9104", "smpp-server:9105"]:
    if t not in targets:
        failures.append(f"prometheus: does not scrape {t}")
runbooks = open("docs/operations.md").read()
for r in alerts:
    anchor = r["annotations"]["runbook"].split("#")[1]
    if f"### {anchor.replace('-', ' ')}".lower() not in runbooks.lower():
        failures.append(f"{r['alert']}: docs/operations.md has no '### {anchor.replace('-', ' ')}' runbook")

for f in failures:
    print("FAIL", f)
if failures:
    sys.exit(f"{len(failures)} deploy-kit check(s) failed")
print(f"deploy kit: {len(alerts)} alerts and {len(dash['panels'])} panels use declared metrics; compose and scrape targets agree: ok")
