"""Checks the Helm chart with Helm's own Go SDK (PyPI helm-python-sdk) and the rendered
manifests with kubernetes-validate, then loads every rendered service config with the
services' own config code (smsgw-admin check-config). Run from the repository root:

    ADMIN_BIN=target/debug/smsgw-admin .venv-helm/bin/python tests/helm/test_chart.py

What stays unchecked here: the ServiceMonitor (a Prometheus Operator CRD that
kubernetes-validate has no schema for) is checked by the assertions below only, and
nothing is applied to a live cluster.
"""
import copy
import os
import hashlib
import subprocess
import sys
import tempfile

import helm_python as helm
import kubernetes_validate
import yaml

CHART = "helm/smsgw"
K8S = "1.33.0"
SERVICES = ["ingest", "router", "dispatcher", "receipt", "optout"]
# Off by default (it needs an accounts Secret); the production render turns it on.
OPTIONAL = ["smpp-server"]
# Not SMSGW_*: every SMSGW_ variable is a config override to the services.
ADMIN = os.environ.get("ADMIN_BIN", "target/debug/smsgw-admin")
os.environ["RUST_BACKTRACE"] = "0"
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL", what)


def docs(rendered):
    out = []
    for path, text in sorted(rendered.items()):
        for d in yaml.safe_load_all(text):
            if d:
                out.append((path, d))
    return out


chart = helm.Chart.load(CHART)

# 1. Lint, strictly: no warnings or errors (info such as "icon is recommended" is fine).
report = helm.lint(CHART, strict=True, kube_version="v" + K8S)
bad = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
check(not bad, f"helm lint: {bad}")

# 2. The values schema refuses what cannot work.
for label, patch in [
    ("unknown key", {"replicaCount": 3}),
    ("bad port", {"services": {"ingest": {"port": 70000}}}),
    ("no brokers", {"kafka": {"brokers": ""}}),
    ("bad pull policy", {"image": {"pullPolicy": "Sometimes"}}),
    ("unknown service key", {"services": {"router": {"replica": 2}}}),
]:
    try:
        chart.validate_schema(patch)
        check(False, f"schema accepted {label}")
    except Exception:
        pass
chart.validate_schema({})

# 3. Render the defaults and a production-like variant.
prod = {
    "kafka": {"brokers": "k0:9092,k1:9092", "properties": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "smsgw"}, "saslPasswordSecret": "kafka-sasl"},
    "carrierCredentialsSecret": "carrier-creds",
    "callbackSecretsSecret": "callback-secrets",
    "moWebhookSecretsSecret": "mo-webhook-secrets",
    "apiKeysSecret": "api-keys",
    "scylla": {"passwordSecret": "scylla-creds"},
    "services": {
        "dispatcher": {"webhookPort": 9180, "replicas": 2, "config": {"carriers": [{"name": "sim", "url": "smpp://smsc:2775", "system_id": "smsgw", "password": "env:SIM_SMPP_PASSWORD", "binds": 2, "max_rate": 100}]}},
        "ingest": {"replicas": 3},
        "router": {"replicas": 2, "config": {"routes": [{"prefix": "+", "carriers": ["sim"]}], "scoring": {"store": {"kind": "scylla", "nodes": ["scylla:9042"], "username": "smsgw", "password": "env:SCYLLA_PASSWORD"}}}},
        "receipt": {"replicas": 3, "config": {"callbacks": {"secret": "env:CALLBACK_SECRET", "senders": {"SHOP": {"url": "https://shop.example/cb", "secret": "env:SHOP_CALLBACK_SECRET"}}}}},
        "optout": {"config": {"senders": {"SHOP": {"webhook_url": "https://shop.example/mo", "webhook_secret": "env:SHOP_MO_SECRET"}}}},
        "smpp-server": {"enabled": True, "serviceType": "LoadBalancer"},
    },
    "smppAccountsSecret": "smpp-accounts",
    "networkPolicy": {"apiFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}]},
}
# Secure by default: without an API keys Secret the chart refuses to render, unless the
# APIs are opened explicitly.
try:
    chart.render({}, name="gw", namespace="sms", is_install=True)
    check(False, "rendered without apiKeysSecret and without auth: disabled")
except Exception as e:
    check("apiKeysSecret is required" in str(e), f"refusal names apiKeysSecret: {str(e)[:300]}")

# Every replica count the chart renders is safe: what would not be is refused.
for label, patch, needle in [
    ("two routers on the memory score store", {"services": {"router": {"replicas": 2}}}, "shared score store"),
    ("autoscaling with static ownership", {"services": {"ingest": {"autoscaling": {"enabled": True}}}}, "autoscaling"),
    ("autoscaling dispatchers", {"kafka": {"assignment": "group"}, "services": {"dispatcher": {"autoscaling": {"enabled": True}}}}, "autoscaling"),
    ("a PDB that blocks drains", {"services": {"optout": {"pdb": {"minAvailable": 1}}}}, "block every node drain"),
    # Signing secrets come from Secrets: a literal one in values is refused.
    ("a literal callback secret", {"services": {"receipt": {"config": {"callbacks": {"secret": "hunter2"}}}}}, "callbackSecretsSecret"),
    ("a literal per-sender callback secret", {"services": {"receipt": {"config": {"callbacks": {"senders": {"SHOP": {"url": "https://x.example", "secret": "hunter2"}}}}}}}, "callbackSecretsSecret"),
    ("an SMPP server without accounts", {"services": {"smpp-server": {"enabled": True}}}, "smppAccountsSecret"),
    ("two SMPP servers on static assignment", {"smppAccountsSecret": "a", "services": {"smpp-server": {"enabled": True, "replicas": 2}}}, "group protocol"),
    ("autoscaling SMPP servers", {"smppAccountsSecret": "a", "kafka": {"assignment": "group"}, "services": {"smpp-server": {"enabled": True, "autoscaling": {"enabled": True}}}}, "autoscaling"),
    ("a literal MO webhook secret", {"services": {"optout": {"config": {"senders": {"SHOP": {"webhook_url": "https://x.example", "webhook_secret": "hunter2"}}}}}}, "moWebhookSecretsSecret"),
]:
    try:
        chart.render(dict(patch, auth="disabled"), name="gw", namespace="sms", is_install=True)
        check(False, f"rendered {label}")
    except Exception as e:
        check(needle in str(e), f"{label}: refusal says why: {str(e)[:300]}")
# With Kafka's group protocol, the stateless-by-partition services may autoscale.
grouped = chart.render({"auth": "disabled", "kafka": {"assignment": "group"}, "services": {"ingest": {"autoscaling": {"enabled": True}}}}, name="gw", namespace="sms", is_install=True)
hpas = [d for _, d in docs(grouped) if d["kind"] == "HorizontalPodAutoscaler"]
check(len(hpas) == 1 and hpas[0]["spec"]["scaleTargetRef"]["kind"] == "StatefulSet", f"group mode: ingest HPA on its StatefulSet: {hpas}")

for label, values in [("open", {"auth": "disabled"}), ("production", prod)]:
    rendered = chart.render(values, name="gw", namespace="sms", is_install=True)
    manifests = docs(rendered)
    kinds = {}
    for path, d in manifests:
        kinds.setdefault(d["kind"], []).append(d)
        if d["kind"] == "ServiceMonitor":
            continue
        try:
            kubernetes_validate.validate(d, K8S, strict=True)
        except Exception as e:
            check(False, f"{label}: {path} {d['kind']} {d['metadata']['name']}: {e}")
    services = SERVICES + (OPTIONAL if label == "production" else [])
    for kind in ["StatefulSet", "Service", "PodDisruptionBudget", "NetworkPolicy"]:
        n = len(services)
        check(len(kinds.get(kind, [])) == n, f"{label}: {n} {kind}s, got {len(kinds.get(kind, []))}")
    check(len(kinds.get("ConfigMap", [])) == 1, f"{label}: one ConfigMap")
    check(len(kinds.get("ServiceMonitor", [])) == 1, f"{label}: one ServiceMonitor")
    check(len(kinds.get("HorizontalPodAutoscaler", [])) == 0, f"{label}: no HPAs (static ownership)")
    for pdb in kinds["PodDisruptionBudget"]:
        check(pdb["spec"].get("maxUnavailable") == 1, f"{label}: {pdb['metadata']['name']} never blocks a drain")

    pod_env = {}
    for dep in kinds["StatefulSet"]:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        check(dep["spec"]["updateStrategy"]["type"] == "RollingUpdate", f"{name}: rolling updates, one pod at a time")
        c = pod["containers"][0]
        check(pod["securityContext"].get("runAsNonRoot") is True, f"{name}: runs as non-root")
        check(c["securityContext"].get("readOnlyRootFilesystem") is True, f"{name}: read-only root")
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"]:
            check(probe in c, f"{name}: {probe}")
        check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{name}: readiness is /readyz")
        check("memory" in c["resources"]["limits"], f"{name}: memory limit")
        env = {e["name"]: e for e in c.get("env", [])}
        # Each pod's instance number is its StatefulSet index, of `replicas`.
        check(env["SMSGW_KAFKA__INSTANCE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']", f"{name}: instance from the pod index")
        check(env["SMSGW_KAFKA__INSTANCES"]["value"] == str(dep["spec"]["replicas"]), f"{name}: instances = replicas")
        pod_env[name.split("-", 2)[2]] = {"SMSGW_KAFKA__INSTANCES": env["SMSGW_KAFKA__INSTANCES"]["value"], "SMSGW_KAFKA__INSTANCE": str(dep["spec"]["replicas"] - 1)}
        if label == "production":
            if name.endswith("router"):
                check(env["SCYLLA_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "scylla-creds", "router: Scylla password from its Secret")
            check(env["SMSGW_KAFKA__PROPERTIES__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kafka-sasl", f"{name}: SASL password from its Secret")
            for svc, secret in [("dispatcher", "carrier-creds"), ("receipt", "callback-secrets"), ("optout", "mo-webhook-secrets")]:
                if name.endswith(svc):
                    check(c.get("envFrom", [{}])[0].get("secretRef", {}).get("name") == secret, f"{svc}: signing secrets from their Secret {secret}")
            if name.endswith("dispatcher"):
                check(any(p["containerPort"] == 9180 for p in c["ports"]), "dispatcher: webhook port")
            if name.endswith("smpp-server"):
                check(env["SMSGW_ACCOUNTS"]["valueFrom"]["secretKeyRef"]["name"] == "smpp-accounts", "smpp-server: accounts from their Secret")
                check(any(p["name"] == "smpp" and p["containerPort"] == 2775 for p in c["ports"]), "smpp-server: SMPP port")
            if name.endswith(("ingest", "optout")):
                check(env["SMSGW_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "api-keys", f"{name}: API keys from their Secret")
                check("SMSGW_AUTH" not in env, f"{name}: keys required")
        else:
            check("envFrom" not in c, f"{name}: no Secret without one configured")
            if name.endswith(("ingest", "optout")):
                check(env.get("SMSGW_AUTH", {}).get("value") == "disabled", f"{name}: opened explicitly")

    # The ServiceMonitor selects the Services, and scrapes the port they all expose.
    sm = kinds["ServiceMonitor"][0]
    sel = sm["spec"]["selector"]["matchLabels"]
    for svc in kinds["Service"]:
        labels = svc["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in sel.items()), f"ServiceMonitor selects {svc['metadata']['name']}")
        check(any(p["name"] == "metrics" for p in svc["spec"]["ports"]), f"{svc['metadata']['name']}: metrics port")
    if label == "production":
        smpp = next(d for d in kinds["Service"] if d["metadata"]["name"].endswith("smpp-server"))
        check(smpp["spec"]["type"] == "LoadBalancer" and any(p["name"] == "smpp" and p["port"] == 2775 for p in smpp["spec"]["ports"]), f"smpp-server Service: {smpp['spec']}")
        np = next(n for n in kinds["NetworkPolicy"] if n["metadata"]["name"].endswith("smpp-server"))
        check(any(p["port"] == "smpp" for r in np["spec"]["ingress"][1:] for p in r["ports"]), "smpp-server: SMPP port allowed")
        check('listen = "0.0.0.0:2775"' in kinds["ConfigMap"][0]["data"]["smpp-server.toml"], "smpp-server listens on its port")
    # Ingest's API is reachable through its NetworkPolicy.
    np = next(n for n in kinds["NetworkPolicy"] if n["metadata"]["name"].endswith("ingest"))
    check(any(p["port"] == "http" for r in np["spec"]["ingress"][1:] for p in r["ports"]), f"{label}: ingest API allowed")
    # Metrics and probes are not on ingest's API port.
    ing = next(d for d in kinds["StatefulSet"] if d["metadata"]["name"].endswith("ingest"))
    ic = ing["spec"]["template"]["spec"]["containers"][0]
    check(ic["readinessProbe"]["httpGet"]["port"] != 8080 and ic["readinessProbe"]["httpGet"]["port"] != "http", f"{label}: ingest probes off the API port: {ic['readinessProbe']}")
    check('admin_listen = "0.0.0.0:9100"' in kinds["ConfigMap"][0]["data"]["ingest.toml"], f"{label}: ingest admin_listen on the metrics port")

    # 4. Every rendered config loads and validates with the service's own code.
    cm = kinds["ConfigMap"][0]["data"]
    env = dict(os.environ, SIM_SMPP_PASSWORD="x", CALLBACK_SECRET="x", SHOP_CALLBACK_SECRET="x", SHOP_MO_SECRET="x")
    # What the ingest and optout pods get from the chart: the keys Secret, or auth disabled.
    api_env = dict(env)
    if label == "production":
        api_env["SMSGW_API_KEYS"] = "ops:" + hashlib.sha256(b"k").hexdigest()
    else:
        api_env["SMSGW_AUTH"] = "disabled"
    with tempfile.TemporaryDirectory() as d:
        for s in services:
            f = os.path.join(d, f"{s}.toml")
            open(f, "w").write(cm[f"{s}.toml"])
            # As the last pod of the StatefulSet sees it.
            run_env = dict(api_env if s in ("ingest", "optout") else env, **pod_env[s], SCYLLA_PASSWORD="x")
            if s == "smpp-server":
                r = subprocess.run([ADMIN.replace("smsgw-admin", "smsgw-smpp-server"), "hash-password", "pw"], capture_output=True, text=True)
                run_env["SMSGW_ACCOUNTS"] = "shop:" + r.stdout.strip()
            r = subprocess.run([ADMIN, "check-config", s, f], capture_output=True, text=True, env=run_env)
            check("assignment = \"static\"" in cm[f"{s}.toml"], f"{label}: {s} owns partitions by instance number")
            check(r.returncode == 0, f"{label}: {s} config: {r.stderr.strip()[:300]}")

# A config the service would refuse is caught before deploying: a typo in a key.
typo = {"auth": "disabled", "services": {"router": {"config": {"optout_refesh_ms": 5}}}}
cm = yaml.safe_load(chart.render(typo, name="gw")["smsgw/templates/configmap.yaml"])["data"]
with tempfile.TemporaryDirectory() as d:
    f = os.path.join(d, "router.toml")
    open(f, "w").write(cm["router.toml"])
    r = subprocess.run([ADMIN, "check-config", "router", f], capture_output=True, text=True)
    check(r.returncode != 0 and "optout_refesh_ms" in r.stderr, f"typo refused: {r.stderr.strip()[:300]}")

# Two dispatchers cannot share a carrier allowed one bind: the config check says so.
one_bind = copy.deepcopy(prod)
one_bind["services"]["dispatcher"]["config"]["carriers"][0]["binds"] = 1
cm = yaml.safe_load(chart.render(one_bind, name="gw")["smsgw/templates/configmap.yaml"])["data"]
with tempfile.TemporaryDirectory() as d:
    f = os.path.join(d, "dispatcher.toml")
    open(f, "w").write(cm["dispatcher.toml"])
    r = subprocess.run([ADMIN, "check-config", "dispatcher", f], capture_output=True, text=True,
                       env=dict(os.environ, SIM_SMPP_PASSWORD="x", SMSGW_KAFKA__INSTANCES="2", SMSGW_KAFKA__INSTANCE="1"))
    check(r.returncode != 0 and "binds" in r.stderr, f"one bind for two dispatchers refused: {r.stderr.strip()[:300]}")

if failures:
    sys.exit(f"{len(failures)} chart check(s) failed")
print("chart: lint, schema, 2 renders validated against Kubernetes", K8S, "and every config loads: ok")
