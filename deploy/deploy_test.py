#!/usr/bin/env python3
"""Checks the deployment files: both kustomize overlays render offline and keep their invariants, and
every Dockerfile refers only to Bazel targets, binaries and scripts that exist in this repository."""
import os
import re
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def render(overlay):
    # Bazel lays files out as symlinks, which kustomize refuses unless told otherwise.
    out = subprocess.run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone",
                          os.path.join(ROOT, "deploy/k8s/overlays", overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def containers(doc):
    return doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])


def check_overlay(name, docs):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for needed in [("Deployment", "a2sf-worker"), ("Service", "a2sf-worker"), ("HorizontalPodAutoscaler", "a2sf-worker"),
                   ("PodDisruptionBudget", "a2sf-worker"), ("Service", "a2sf-cachemgr"), ("ConfigMap", "a2sf-policy")]:
        check(needed in kinds, f"{name}: missing {needed}")
    for doc in docs:
        for c in containers(doc):
            where = f"{name}: {doc['kind']}/{doc['metadata']['name']}/{c['name']}"
            image = c.get("image", "")
            check(re.fullmatch(r"[\w./-]+:[\w.-]+", image) is not None, f"{where}: image {image!r} is not pinned by tag")
            check(not image.endswith(":latest"), f"{where}: image uses 'latest'")
            for probe in ("readinessProbe", "livenessProbe"):
                check("grpc" in c.get(probe, {}), f"{where}: no native gRPC {probe}")
            limits = c.get("resources", {}).get("limits", {})
            check(("nvidia.com/gpu" in limits) == (name == "gpu" and doc["metadata"]["name"] == "a2sf-worker"),
                  f"{where}: nvidia.com/gpu limits belong to the gpu overlay's workers only")
            check("requests" in c.get("resources", {}) or name == "gpu", f"{where}: no resource requests")
    worker = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "a2sf-worker")
    spec = worker["spec"]["template"]["spec"]
    check(spec.get("terminationGracePeriodSeconds", 0) >= 60, f"{name}: worker grace period too short to drain jobs")
    check("preStop" in spec["containers"][0].get("lifecycle", {}), f"{name}: worker has no preStop hook")
    check("podAntiAffinity" in spec.get("affinity", {}), f"{name}: worker has no anti-affinity")
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "a2sf-worker")
    check(service["spec"].get("clusterIP") == "None", f"{name}: the worker Service must be headless for round_robin")


def check_dockerfiles():
    directory = os.path.join(ROOT, "deploy/docker")
    files = sorted(f for f in os.listdir(directory) if f.startswith("Dockerfile"))
    check(len(files) >= 4, "expected Dockerfiles for cachemgr, worker, worker-cuda and client")
    for name in files:
        text = open(os.path.join(directory, name)).read()
        check("USER 10001" in text, f"{name}: does not run as the non-root user")
        check("scripts/setup.sh" in text, f"{name}: does not install through scripts/setup.sh")
        for package, target in re.findall(r"//([\w/]+):([\w-]+)", text):
            build = os.path.join(ROOT, package, "BUILD")
            ok = os.path.exists(build) and re.search(r'name = "%s"' % re.escape(target), open(build).read())
            check(ok, f"{name}: Bazel target //{package}:{target} does not exist")
        for path in re.findall(r"bazel-bin/([\w/.-]+)", text):
            package, _, binary = path.rpartition("/")
            build = os.path.join(ROOT, package, "BUILD")
            ok = os.path.exists(build) and re.search(r'name = "%s"' % re.escape(binary), open(build).read())
            check(ok, f"{name}: binary bazel-bin/{path} is built by no target")
        for script in re.findall(r"(scripts/[\w.-]+)", text):
            check(os.path.exists(os.path.join(ROOT, script)), f"{name}: {script} does not exist")
        for binary in re.findall(r"/opt/a2sf/bin/([\w-]+)", text):
            check(re.search(r"bazel-bin/[\w/]+/" + re.escape(binary) + r"\b", text) is not None,
                  f"{name}: entrypoint {binary} is not among the binaries it bundles")


check_dockerfiles()
if shutil.which("kubectl"):
    for overlay in ("cpu", "gpu"):
        check_overlay(overlay, render(overlay))
else:
    print("kubectl not found: skipping the kustomize renders (the Dockerfile checks ran)")
if failures:
    print("\n".join("FAIL: " + f for f in failures))
    sys.exit(1)
print("deployment checks passed")
