#!/usr/bin/env python3
"""Adapts a rendered overlay (kubectl kustomize) for `podman kube play` on one machine, changing only
what a local player cannot do, and writes one file per pod: cachemgr-0.play.yaml, worker-N.play.yaml.

  - one Pod per replica (the cache manager: its Deployment's replicas; the workers: --workers) on the
    host network, each server on its own 127.0.0.1 port instead of 0.0.0.0 behind a Service, and the
    workers pointed at the cache-manager replicas' ports (ipv4:a,b) instead of cluster DNS;
  - images are never pulled; restartPolicy Never (podman 4.3 would rerun a finished initContainer);
  - the model claim becomes a hostPath of the fixtures folder, and the model ConfigMap names the
    fixture's files with their sha256 (the initContainer still checks them and skips the fetch); with
    --fetch-into DIR the claim is the empty folder DIR instead and the initContainer downloads the files
    from the fixtures (mounted at /mirror, URL file:///mirror) and checks their sums;
  - $(VAR) in arguments is expanded here (podman 4.3 passes it through literally) from the
    container's env values, its envFrom ConfigMaps and the pod name (fieldRef metadata.name);
  - the admin-token Secret is the podman secret --secret; /dev/shm is podman's own pod-wide tmpfs
    (its containers share the IPC namespace, as the emptyDir gives in Kubernetes).
Objects a local player has no use for (Namespace, Service, HPA, PDB, NetworkPolicy, PVC) are dropped.

  k8s_rehearsal_adapt.py RENDERED OUTDIR --prefix P --port-base N --workers K --fixtures DIR
                         --model FILE --tokenizer FILE [--secret NAME]
"""
import argparse
import copy
import hashlib
import os
import re

import yaml


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def adapt_ports(container, ports):
    """Rewrites 0.0.0.0:PORT listen flags and probes with ports[PORT]."""
    args = []
    for arg in container.get("args", []):
        match = re.fullmatch(r"(--(?:metrics_)?listen)=0\.0\.0\.0:(\d+)", arg)
        args.append(f"{match.group(1)}=127.0.0.1:{ports[int(match.group(2))]}" if match else arg)
    container["args"] = args
    # On the host network the listen flags are the ports; podman 4.3 refuses port lists there.
    container.pop("ports", None)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if "grpc" in container.get(probe, {}):
            container[probe]["grpc"]["port"] = ports[container[probe]["grpc"]["port"]]


def expand(container, configmaps, pod_name):
    """Kubernetes' $(VAR) expansion of the arguments, which podman 4.3 does not do."""
    values = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(next(c["data"] for c in configmaps if c["metadata"]["name"] == source["configMapRef"]["name"]))
    for env in container.get("env", []):
        if "value" in env:
            values[env["name"]] = env["value"]
        elif env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            values[env["name"]] = pod_name
    container["args"] = [re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)), a)
                         for a in container.get("args", [])]


def make_pod(deployment, name, ports, options, cachemgr_target, configmaps):
    spec = copy.deepcopy(deployment["spec"]["template"]["spec"])
    spec.pop("affinity", None)
    spec["hostNetwork"] = True
    spec["restartPolicy"] = "Never"
    for container in spec.get("initContainers", []) + spec["containers"]:
        container["imagePullPolicy"] = "Never"
        adapt_ports(container, ports)
        container["args"] = [f"--cachemgr={cachemgr_target}" if a.startswith("--cachemgr=dns:") else a
                             for a in container.get("args", [])]
        expand(container, configmaps, name)
        container["volumeMounts"] = [m for m in container.get("volumeMounts", []) if m["mountPath"] != "/dev/shm"]
        for env in container.get("env", []):
            if "secretKeyRef" in env.get("valueFrom", {}):
                env["valueFrom"]["secretKeyRef"]["name"] = options.secret
    used = {m["name"] for c in spec.get("initContainers", []) + spec["containers"] for m in c["volumeMounts"]}
    volumes = []
    for volume in spec.get("volumes", []):
        if volume["name"] not in used:
            continue
        if "persistentVolumeClaim" in volume:
            volume = {"name": volume["name"],
                      "hostPath": {"path": options.fetch_into or options.fixtures, "type": "Directory"}}
        volumes.append(volume)
    if options.fetch_into:
        volumes.append({"name": "mirror", "hostPath": {"path": options.fixtures, "type": "Directory"}})
        for container in spec.get("initContainers", []):
            container["volumeMounts"].append({"name": "mirror", "mountPath": "/mirror", "readOnly": True})
    spec["volumes"] = volumes
    metadata = {"name": name, "labels": deployment["spec"]["template"]["metadata"].get("labels", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def main():
    parser = argparse.ArgumentParser()
    for flag in ("rendered", "outdir"):
        parser.add_argument(flag)
    for flag in ("--prefix", "--fixtures", "--model", "--tokenizer"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--port-base", type=int, required=True)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--secret", default="")
    parser.add_argument("--fetch-into", default="")
    options = parser.parse_args()
    options.secret = options.secret or f"{options.prefix}-admin"
    with open(options.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
    for cm in configmaps:
        cm["metadata"].pop("namespace", None)
        if "A2SF_MODEL_FILE" in cm.get("data", {}):
            cm["data"].update({
                "A2SF_MODEL_BASE_URL": "file:///mirror" if options.fetch_into else "file:///nonexistent",
                "A2SF_MODEL_FILE": options.model,
                "A2SF_MODEL_SHA256": sha256(os.path.join(options.fixtures, options.model)),
                "A2SF_TOKENIZER_FILE": options.tokenizer,
                "A2SF_TOKENIZER_SHA256": sha256(os.path.join(options.fixtures, options.tokenizer)),
            })
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    base = options.port_base
    replicas = deployments["a2sf-cachemgr"]["spec"].get("replicas", 1) if "a2sf-cachemgr" in deployments else 0
    target = "ipv4:" + ",".join(f"127.0.0.1:{base + 2 * r}" for r in range(replicas))
    for r in range(replicas):
        pod = make_pod(deployments["a2sf-cachemgr"], f"{options.prefix}-cachemgr-{r}",
                       {50051: base + 2 * r, 9091: base + 2 * r + 1}, options, target, configmaps)
        write(options.outdir, f"cachemgr-{r}", configmaps, pod)
    for i in range(options.workers):
        ports = {50052: base + 10 + 2 * i, 9092: base + 11 + 2 * i, 50051: base + 50 + 2 * i, 9091: base + 51 + 2 * i}
        pod = make_pod(deployments["a2sf-worker"], f"{options.prefix}-worker-{i}", ports, options, target, configmaps)
        write(options.outdir, f"worker-{i}", configmaps, pod)


def write(outdir, name, configmaps, pod):
    with open(os.path.join(outdir, f"{name}.play.yaml"), "w") as f:
        yaml.safe_dump_all(configmaps + [pod], f, sort_keys=False)


if __name__ == "__main__":
    main()
