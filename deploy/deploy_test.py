#!/usr/bin/env python3
"""Checks the deployment files.

Every kustomize overlay is rendered offline and each rendered object is validated against the
Kubernetes API schema (kubernetes-models, through deploy/schema/validate.mjs, when
$A2SF_K8S_SCHEMA_MODULES names its node_modules; scripts/test.sh always sets it) and against the
rules the cluster's policy (Pod Security "restricted") and our runbook rely on. The Dockerfiles are
checked against this repository (targets, binaries, scripts) and against each other.

  deploy_test.py ROOT            (Bazel: deploy_test.sh passes the runfiles root)
"""
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
NAMESPACE = "a2sf"
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PriorityClass"}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "Job"}
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def read(relative):
    path = os.path.join(ROOT, relative)
    if not check(os.path.exists(path), f"{relative} does not exist"):
        return ""
    with open(path) as f:
        return f.read()


def render(overlay):
    # Bazel lays files out as symlinks, which kustomize refuses unless told otherwise.
    out = subprocess.run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone",
                          os.path.join(ROOT, "deploy/k8s/overlays", overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def validate_schema(name, docs):
    modules = os.environ.get("A2SF_K8S_SCHEMA_MODULES", "")
    if not modules:
        print(f"{name}: SKIPPED the Kubernetes API schema validation: A2SF_K8S_SCHEMA_MODULES is not set "
              "(scripts/install_schema_validator.sh installs it; scripts/test.sh sets it)")
        return
    if not check(os.path.isdir(os.path.join(modules, "kubernetes-models")),
                 f"A2SF_K8S_SCHEMA_MODULES={modules} holds no kubernetes-models"):
        return
    result = subprocess.run(["node", os.path.join(ROOT, "deploy/schema/validate.mjs"), modules],
                            input=json.dumps(docs), capture_output=True, text=True)
    print(f"{name}: {result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr}")
    for line in result.stdout.splitlines()[:-1]:
        failures.append(f"{name}: schema: {line}")
    check(result.returncode == 0 or result.stdout.splitlines()[:-1], f"{name}: validator failed: {result.stderr}")


def pod_spec(doc):
    return doc.get("spec", {}).get("template", {}).get("spec") if doc["kind"] in WORKLOADS else None


def label_rules(name, doc, where):
    for labels, what in [(doc["metadata"].get("labels", {}), where)] + (
            [(doc["spec"]["template"]["metadata"].get("labels", {}), where + " pod template")]
            if pod_spec(doc) is not None else []):
        check("app.kubernetes.io/name" in labels, f"{what}: no app.kubernetes.io/name label")
        check(labels.get("app.kubernetes.io/part-of") == "a2sf-serve", f"{what}: no app.kubernetes.io/part-of label")
        check("app.kubernetes.io/component" in labels, f"{what}: no app.kubernetes.io/component label")


def container_rules(where, c, spec, init):
    pod_sc = spec.get("securityContext", {})
    sc = c.get("securityContext", {})
    image = c.get("image", "")
    check(re.fullmatch(r"[\w./-]+:[\w.-]+", image) is not None and not image.endswith(":latest"),
          f"{where}: image {image!r} is not pinned by a tag")
    check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation is not false")
    check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem is not true")
    check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: capabilities do not drop ALL")
    check(not sc.get("capabilities", {}).get("add"), f"{where}: adds capabilities")
    check(not sc.get("privileged"), f"{where}: privileged")
    check(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot is not true")
    check(sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type") == "RuntimeDefault",
          f"{where}: seccompProfile is not RuntimeDefault")
    resources = c.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            check(resource in resources.get(kind, {}), f"{where}: no {resource} {kind}")
    if not init:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            check(probe in c, f"{where}: no {probe}")
    for env in c.get("env", []):
        if "TOKEN" in env["name"]:
            check("secretKeyRef" in env.get("valueFrom", {}) and not env["valueFrom"]["secretKeyRef"].get("optional"),
                  f"{where}: {env['name']} does not come from a required Secret key")
    args = " ".join(c.get("args", []) + c.get("command", []))
    check("--admin_token" not in args, f"{where}: an admin token on the command line")
    if "cachemgr" in image.split(":")[0] or "a2sf-cachemgr" in " ".join(c.get("command", [])):
        check(any(e["name"] == "A2SF_ADMIN_TOKEN" for e in c.get("env", [])),
              f"{where}: the cache manager gets no admin token (PolicyAdmin would be open)")
    if "--cachemgr=" in args:
        check("--default_policy" not in args, f"{where}: --default_policy is ignored when policies run in the cache manager")
    # Every $(VAR) in the arguments must be defined by the container's env or envFrom.
    defined = {e["name"] for e in c.get("env", [])}
    refs = set(re.findall(r"\$\((\w+)\)", args))
    check(refs <= defined or c.get("envFrom"), f"{where}: arguments use {sorted(refs - defined)} which nothing defines")


def workload_rules(name, doc, configmaps, claims):
    where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
    spec = pod_spec(doc)
    check(spec.get("securityContext", {}).get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot is not true")
    check(not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"),
          f"{where}: uses the host's namespaces")
    for volume in spec.get("volumes", []):
        check("hostPath" not in volume, f"{where}: hostPath volume {volume['name']} (forbidden by Pod Security)")
        if "persistentVolumeClaim" in volume:
            check(volume["persistentVolumeClaim"]["claimName"] in claims,
                  f"{where}: PersistentVolumeClaim {volume['persistentVolumeClaim']['claimName']} is not defined")
        if "configMap" in volume:
            check(volume["configMap"]["name"] in configmaps, f"{where}: ConfigMap {volume['configMap']['name']} is not defined")
    for init, key in ((True, "initContainers"), (False, "containers")):
        for c in spec.get(key, []):
            container_rules(f"{where}/{c['name']}", c, spec, init)
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    check(source["configMapRef"]["name"] in configmaps,
                          f"{where}/{c['name']}: ConfigMap {source['configMapRef']['name']} is not defined")


def containers(doc):
    spec = pod_spec(doc) or {}
    return spec.get("initContainers", []) + spec.get("containers", [])


def find(docs, kind, name):
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def worker_rules(name, docs):
    worker = find(docs, "Deployment", "a2sf-worker")
    if not check(worker is not None, f"{name}: no worker Deployment"):
        return
    spec = worker["spec"]["template"]["spec"]
    main = next(c for c in spec["containers"] if c["name"] == "worker")
    args = main.get("args", [])
    check(spec.get("terminationGracePeriodSeconds", 0) >= 60, f"{name}: worker grace period too short to drain jobs")
    check("preStop" in main.get("lifecycle", {}), f"{name}: worker has no preStop hook")
    check("podAntiAffinity" in spec.get("affinity", {}), f"{name}: worker has no anti-affinity")
    startup = main.get("startupProbe", {})
    check(startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 300,
          f"{name}: the worker's startupProbe allows under 5 minutes to load a model")
    service = find(docs, "Service", "a2sf-worker")
    check(service is not None and service["spec"].get("clusterIP") == "None",
          f"{name}: the worker Service must be headless for round_robin")
    # The model: an initContainer fetching it (sha256-pinned) onto a defined claim with a storage class.
    fetch = [c for c in spec.get("initContainers", []) if "model-fetcher" in c.get("image", "")]
    check(len(fetch) == 1, f"{name}: no initContainer fetches the model")
    model = find(docs, "ConfigMap", next((s["configMapRef"]["name"] for c in fetch for s in c.get("envFrom", [])
                                          if "configMapRef" in s), ""))
    check(model is not None and all(re.fullmatch(r"[0-9a-f]{64}", model["data"].get(k, ""))
                                    for k in ("A2SF_MODEL_SHA256", "A2SF_TOKENIZER_SHA256")),
          f"{name}: the model fetch has no pinned sha256 sums")
    claim = find(docs, "PersistentVolumeClaim", "a2sf-models")
    check(claim is not None and claim["spec"].get("storageClassName") not in (None, "", "STORAGE_CLASS_FROM_PARAMS"),
          f"{name}: the model claim has no storage class")
    # Autoscaling on the in-flight jobs gauge the worker exports, CPU as the fallback.
    hpa = find(docs, "HorizontalPodAutoscaler", "a2sf-worker")
    metrics = hpa["spec"].get("metrics", []) if hpa else []
    pods = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
    check(pods and all(n in read("worker/service/worker_metrics.cc") for n in pods),
          f"{name}: the worker HPA does not scale on a gauge the worker exports ({pods})")
    check(any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics),
          f"{name}: the worker HPA has no CPU fallback")
    check(find(docs, "PodDisruptionBudget", "a2sf-worker") is not None, f"{name}: no worker PodDisruptionBudget")
    policy = find(docs, "NetworkPolicy", "a2sf-worker")
    check(policy is not None and only_from(policy, "grpc", {"podSelector": {"matchLabels": {"a2sf.io/client": "true"}},
                                                            "namespaceSelector": {}}),
          f"{name}: no NetworkPolicy lets only clients reach the workers")
    cachemgr_rules(name, docs, spec, args)


def only_from(policy, port, peer):
    """Whether the policy admits exactly `peer` to `port` (other rules may only open metrics ports)."""
    rules = policy["spec"].get("ingress", [])
    on_port = [r for r in rules if any(p.get("port") == port for p in r.get("ports", []))]
    others_metrics = all(all(str(p.get("port")).endswith("metrics") for p in r.get("ports", [{}]))
                         for r in rules if r not in on_port)
    return (policy["spec"].get("policyTypes") == ["Ingress"] and others_metrics and
            [f for r in on_port for f in r.get("from", [])] == [peer] and all("from" in r for r in on_port))


def cachemgr_rules(name, docs, worker_spec, worker_args):
    target = next((a.split("=", 1)[1] for a in worker_args if a.startswith("--cachemgr=")), "")
    deployment = find(docs, "Deployment", "a2sf-cachemgr")
    if target.startswith("unix:"):
        # Node-local: a sidecar sharing the socket folder through emptyDir in memory (the score ring is a
        # memfd passed over the ring socket in that folder).
        sidecar = next((c for c in worker_spec["containers"] if c["name"] == "cachemgr"), None)
        if not check(sidecar is not None, f"{name}: --cachemgr={target} but no cache-manager sidecar"):
            return
        memory = {v["name"] for v in worker_spec.get("volumes", []) if v.get("emptyDir", {}).get("medium") == "Memory"}
        worker = next(c for c in worker_spec["containers"] if c["name"] == "worker")
        for path in (os.path.dirname(target[len("unix:"):]),):
            mounts = [{m["name"] for m in c.get("volumeMounts", []) if m["mountPath"] == path} for c in (worker, sidecar)]
            check(mounts[0] and mounts[0] == mounts[1] and mounts[0] <= memory,
                  f"{name}: worker and sidecar do not share {path} through an emptyDir in memory")
        check(f"--unix_socket={target[len('unix:'):]}" in sidecar["args"], f"{name}: the sidecar does not serve {target}")
        check(deployment is None, f"{name}: a shared cache manager beside the sidecars")
        return
    check(target.startswith("dns:///a2sf-cachemgr"), f"{name}: the workers do not resolve the cache manager replicas ({target})")
    if not check(deployment is not None, f"{name}: no cache manager Deployment"):
        return
    check(deployment["spec"].get("replicas", 1) >= 2, f"{name}: the cache manager has a single replica")
    service = find(docs, "Service", "a2sf-cachemgr")
    check(service is not None and service["spec"].get("clusterIP") == "None", f"{name}: the cache manager Service is not headless")
    check("--on_cachemgr_failure=continue" in worker_args, f"{name}: workers fail their jobs when a cache manager replica goes away")
    check(find(docs, "PodDisruptionBudget", "a2sf-cachemgr") is not None, f"{name}: no cache manager PodDisruptionBudget")
    policy = find(docs, "NetworkPolicy", "a2sf-cachemgr")
    check(policy is not None and only_from(policy, "grpc", {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "a2sf-worker"}}}),
          f"{name}: no NetworkPolicy lets only workers reach the cache manager")


def check_overlay(name, docs):
    validate_schema(name, docs)
    configmaps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for doc in docs:
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CLUSTER_SCOPED:
            check("namespace" not in doc["metadata"], f"{where}: a cluster-scoped object with a namespace")
        else:
            check(doc["metadata"].get("namespace") == NAMESPACE, f"{where}: not in namespace {NAMESPACE}")
        label_rules(name, doc, where)
        tags = {c["image"].split(":")[-1] for c in containers(doc) if c.get("image", "").startswith("a2sf/")}
        check(len(tags) <= 1, f"{where}: a2sf images with different tags {sorted(tags)}")
        if pod_spec(doc) is not None:
            workload_rules(name, doc, configmaps, claims)
        for c in (pod_spec(doc) or {}).get("containers", []):
            gpu = "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
            check(gpu == (name == "gpu" and c["name"] == "worker"),
                  f"{where}/{c['name']}: nvidia.com/gpu limits belong to the gpu overlay's workers only")
    worker_rules(name, docs)


def stages(text):
    """Dockerfile stages as {name: (base, [instructions])}, continuation lines joined."""
    result, current = {}, None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if match:
            current = match.group(2) or f"stage{len(result)}"
            result[current] = (match.group(1), [])
        elif line and not line.startswith("#") and current:
            result[current][1].append(line)
    return result


def final_user(all_stages, name):
    base, instructions = all_stages[name]
    users = [i.split()[1] for i in instructions if i.upper().startswith("USER ")]
    return users[-1] if users else (final_user(all_stages, base) if base in all_stages else "root")


def bundles(builder):
    """{bundle folder: [binary names]} from the builder's scripts/bundle_runtime.sh calls."""
    return {d: [os.path.basename(b) for b in binaries.split()]
            for d, binaries in re.findall(r"bundle_runtime\.sh /bundle/([\w-]+)((?:\s+bazel-bin/\S+)+)", builder)}


def check_dockerfile(name, text):
    all_stages = stages(text)
    check("builder" in all_stages, f"{name}: no builder stage")
    builder = " ".join(all_stages.get("builder", ("", []))[1])
    check("scripts/setup.sh" in builder, f"{name}: the builder does not install through scripts/setup.sh")
    for stage, (base, instructions) in all_stages.items():
        if stage == "builder":
            continue
        body = " ".join(instructions)
        check(base != "builder", f"{name}: stage {stage} is built on the builder (would ship the compiler)")
        check(not re.search(r"\b(bazel|build-essential|g\+\+|gcc|setup\.sh)\b", body),
              f"{name}: stage {stage} installs build tools")
        if stage != "runtime":
            check(final_user(all_stages, stage) == "10001:10001", f"{name}: image {stage} does not run as 10001:10001")
            copied = re.findall(r"COPY --from=builder /bundle/([\w-]+)", body)
            bundled = {b for d in copied for b in bundles(builder).get(d, [])}
            for binary in re.findall(r"/opt/a2sf/bin/([\w-]+)\"", body):
                check(binary in bundled, f"{name}: {stage} runs {binary}, which its bundle does not hold")
    for package, target in re.findall(r"//([\w/]+):([\w-]+)", text):
        build = os.path.join(ROOT, package, "BUILD")
        check(os.path.exists(build) and re.search(r'name = "%s"' % re.escape(target), open(build).read()),
              f"{name}: Bazel target //{package}:{target} does not exist")
    for path in re.findall(r"bazel-bin/([\w/.-]+)", text):
        package, _, binary = path.rpartition("/")
        check(f"//{package}:{binary}" in text, f"{name}: bazel-bin/{path} is not built by the builder's bazel build")
    for script in re.findall(r"(scripts/[\w.-]+)", text):
        check(os.path.exists(os.path.join(ROOT, script)), f"{name}: {script} does not exist")
    return all_stages


def check_dockerfiles():
    cpu = check_dockerfile("Dockerfile", read("deploy/docker/Dockerfile"))
    cuda = check_dockerfile("Dockerfile.worker-cuda", read("deploy/docker/Dockerfile.worker-cuda"))
    for target in ("cachemgr", "worker", "client", "model-fetcher"):
        check(target in cpu, f"Dockerfile: no {target} target")
    # The GPU image keeps the CPU layout: the same sources copied into its builder.
    copies = [[i for i in s["builder"][1] if i.startswith("COPY")] for s in (cpu, cuda) if "builder" in s]
    check(len(copies) == 2 and copies[0] == copies[1], "Dockerfile.worker-cuda: its builder copies other sources")
    images = re.findall(r"name: (a2sf/[\w-]+)", read("deploy/k8s/base/kustomization.yaml"))
    for image in images:
        check(image.split("/")[1] in cpu, f"kustomization pins {image}, which no Dockerfile target builds")


check_dockerfiles()
if shutil.which("kubectl"):
    for overlay in sorted(os.listdir(os.path.join(ROOT, "deploy/k8s/overlays"))):
        check_overlay(overlay, render(overlay))
else:
    print("kubectl not found: SKIPPED the kustomize renders (the Dockerfile checks ran)")
if failures:
    print("\n".join("FAIL: " + f for f in failures))
    sys.exit(1)
print("deployment checks passed")
