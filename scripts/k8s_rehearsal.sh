#!/usr/bin/env bash
# Rehearses the Kubernetes deployment on this machine from the manifests themselves, with podman:
#   1. renders deploy/k8s/overlays/cpu (kubectl kustomize) and adapts only what a local player cannot
#      do (k8s_rehearsal_adapt.py: one Pod per replica on the host network with its own loopback
#      ports instead of Services and cluster DNS, images never pulled, the model claim as a hostPath
#      of the fixtures, the Secret as a podman secret, restartPolicy Never);
#   2. plays the two cache-manager replicas and three workers with `podman kube play` (the
#      initContainer checks the model's pinned sha256 and skips the fetch), runs a client job through
#      each worker (the client image), swaps the fleet's policy with the admin token from the Secret
#      (and checks that PolicyAdmin refuses a change without it), kills one worker pod under load and
#      checks that only its jobs failed while the other workers completed theirs, then kills the cache
#      manager replica the workers use under load and checks that every job completed (running jobs
#      continue in-process, new ones open their sessions on the other replica);
#   3. plays a worker pod of deploy/k8s/overlays/cpu-sidecar (the cache manager as a sidecar: Unix
#      socket + shared-memory ring in the pod) on an empty model volume, so that its initContainer
#      downloads the model (from the fixtures as a file:// mirror) and checks the sums, and runs a job
#      through it;
#   4. tears everything down. Exits non-zero on any failure. All traffic stays on 127.0.0.1.
# Needs the images (scripts/build_images.sh) and the stories260K fixtures ($A2SF_FIXTURES).
#   scripts/k8s_rehearsal.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures="$(cd "${A2SF_FIXTURES:-../shared/fixtures}" && pwd)"
tag="$(sed -n 's/^ *newTag: "\(.*\)"/\1/p' deploy/k8s/base/kustomization.yaml | head -n 1)"
for image in cachemgr worker client model-fetcher; do
  podman image exists "a2sf/$image:$tag" || { echo "k8s_rehearsal: no image a2sf/$image:$tag (run scripts/build_images.sh)"; exit 1; }
done
[ -f "$fixtures/stories260K-dq.bin" ] || { echo "k8s_rehearsal: no stories260K fixtures in $fixtures"; exit 1; }

run_id="a2sf-rh$$"
dir="$(mktemp -d "/tmp/$run_id.XXXXXX")"
base_port="${A2SF_REHEARSAL_PORT_BASE:-$((20000 + ($$ % 2000) * 10))}"
token="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
teardown() {
  for f in "$dir"/*.play.yaml "$dir"/sidecar/*.play.yaml; do [ -f "$f" ] && podman kube down "$f" >/dev/null 2>&1 || true; done
}
cleanup() {  # whatever teardown left, by this run's names only
  teardown
  for pod in $(podman pod ps --filter "name=$run_id-" --format '{{.Name}}'); do podman pod rm -f "$pod" >/dev/null 2>&1 || true; done
  podman rm -f "$run_id-client" >/dev/null 2>&1 || true
  podman secret rm "$run_id-admin" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "k8s_rehearsal: FAIL: $*"; tail -n 20 "$dir/play.log" 2>/dev/null; for c in $(podman ps -a --format '{{.Names}}' | grep "^$run_id" || true); do echo "--- $c"; podman logs --tail 20 "$c" 2>&1; done; exit 1; }
# The client image, kept running so each call is an exec rather than a container start.
client() { podman exec "$run_id-client" /opt/a2sf/bin/a2sf "$@"; }
metric() {  # PORT NAME: a counter's value from a server's Prometheus endpoint on 127.0.0.1
  python3 -c 'import sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode()
print(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(sys.argv[2])))' "$1" "$2"
}
kill_when_running() {  # WORKER_ADDRESS POD: kills the pod once the worker reports a running job
  for _ in $(seq 300); do
    if client jobs --worker="$1" --plaintext 2>/dev/null | grep -q JOB_STATE_RUNNING; then
      podman pod kill "$2" >/dev/null; echo "killed pod $2 with jobs running"; return 0
    fi
    sleep 0.05
  done
  echo "never saw a running job on $1"
}
wait_healthy() {  # ADDRESS WHAT
  for _ in $(seq 120); do client health --target="$1" --plaintext >/dev/null 2>&1 && return 0; sleep 1; done
  fail "$2 never became healthy on $1"
}

echo "== render deploy/k8s/overlays/cpu and adapt it for podman (ports from $base_port) =="
kubectl kustomize deploy/k8s/overlays/cpu > "$dir/cpu.yaml"
python3 scripts/k8s_rehearsal_adapt.py "$dir/cpu.yaml" "$dir" --prefix "$run_id" --port-base "$base_port" \
  --workers 3 --fixtures "$fixtures" --model stories260K-dq.bin --tokenizer tok512.bin
# The Secret the manifests read the admin token from: podman keeps it as a JSON map of base64 values.
printf '{"token":"%s"}' "$(printf %s "$token" | base64 -w0)" | podman secret create "$run_id-admin" - >/dev/null
podman run -d --name "$run_id-client" --network host --read-only --cap-drop ALL --security-opt no-new-privileges \
  --entrypoint /bin/sleep "a2sf/client:$tag" infinity >/dev/null
replicas=("127.0.0.1:$base_port" "127.0.0.1:$((base_port + 2))")

echo "== play two cache-manager replicas and three workers =="
for r in 0 1; do
  podman kube play "$dir/cachemgr-$r.play.yaml" >>"$dir/play.log" 2>&1 || fail "podman kube play cachemgr-$r"
done
for r in 0 1; do wait_healthy "${replicas[$r]}" "cache manager replica $r"; done
workers=()
for i in 0 1 2; do
  podman kube play "$dir/worker-$i.play.yaml" >>"$dir/play.log" 2>&1 || fail "podman kube play worker-$i"
  workers+=("127.0.0.1:$((base_port + 10 + i * 2))")
done
for i in 0 1 2; do wait_healthy "${workers[$i]}" "worker $i"; done
podman pod ps --filter "name=$run_id-" --format '{{.Name}} {{.Status}} {{.NumberOfContainers}} containers'

echo "== one job through each worker =="
for i in 0 1 2; do
  client generate --worker="${workers[$i]}" --plaintext --prompt="Once upon a time" --max_tokens=40 \
    > "$dir/job$i.txt" || fail "job through worker $i"
  grep "^job .* on $run_id-worker-$i: " "$dir/job$i.txt" || fail "the job did not run on worker $i"
done

echo "== swap the fleet's policy on every replica (admin token from the Secret) =="
if client policy set --policy=h2o --cachemgr="${replicas[0]}" --plaintext >/dev/null 2>&1; then
  fail "PolicyAdmin accepted a change without the token"
fi
echo "policy set without the token: refused"
for r in 0 1; do
  client policy set --policy=h2o --cachemgr="${replicas[$r]}" --plaintext --token="$token" || fail "policy set on replica $r"
  client policy get --cachemgr="${replicas[$r]}" --plaintext | grep -q h2o || fail "replica $r's default did not become h2o"
done
client generate --worker="${workers[2]}" --plaintext --prompt="Once upon a time" --max_tokens=40 > "$dir/swapped.txt" \
  || fail "job after the swap"
grep "^job .*policy h2o" "$dir/swapped.txt" || fail "a job naming no policy did not run h2o after the swap"

echo "== kill worker 1's pod under load: only its jobs fail, workers 0 and 2 finish theirs =="
kill_when_running "${workers[1]}" "$run_id-worker-1" &
killer=$!
set +e
client generate --worker="ipv4:$(IFS=,; echo "${workers[*]}")" --round_robin --plaintext --prompt_ids=1 \
  --concurrency=6 --repeat=60 --max_tokens=500 > "$dir/load.txt" 2>&1
set -e
wait "$killer" || true
tail -n 1 "$dir/load.txt"
bad="$(grep -E '^job [0-9]+: ' "$dir/load.txt" | grep -v ': ok on ' | grep -v ': UNAVAILABLE: ' || true)"
[ -z "$bad" ] || fail "jobs failed other than with UNAVAILABLE: $bad"
grep -q ': UNAVAILABLE: ' "$dir/load.txt" || fail "no job was in flight on the killed worker"
survivors="$(grep -E ': ok on ' "$dir/load.txt" | sed 's/.*: ok on \([^ ]*\).*/\1/' | sort | uniq -c | tr '\n' ' ')"
echo "completed: $survivors"
echo "$survivors" | grep -q "worker-0" && echo "$survivors" | grep -q "worker-2" || fail "workers 0 and 2 did not both complete jobs"
for i in 0 2; do client health --target="${workers[$i]}" --plaintext >/dev/null || fail "worker $i is down after the kill"; done

echo "== kill the cache-manager replica the workers use, under load: every job completes =="
# pick_first: every worker's sessions live on replica 0, none on replica 1 yet.
steps0="$(metric $((base_port + 1)) a2sf_cachemgr_steps_total)"; steps1="$(metric $((base_port + 3)) a2sf_cachemgr_steps_total)"
echo "steps so far: replica 0 $steps0, replica 1 $steps1"
kill_when_running "${workers[0]}" "$run_id-cachemgr-0" &
killer=$!
set +e
# The jobs name their policy (a2sf), so the failover shows one policy continuing in-process.
client generate --worker="ipv4:${workers[0]},${workers[2]}" --round_robin --plaintext --prompt_ids=1 \
  --policy=a2sf --alpha=0.3 --budget_ratio=0.3 --concurrency=4 --repeat=24 --max_tokens=500 > "$dir/failover.txt" 2>&1
rc=$?
set -e
wait "$killer" || true
tail -n 1 "$dir/failover.txt"
[ "$rc" -eq 0 ] && [ "$(grep -c ': ok on ' "$dir/failover.txt")" -eq 24 ] || fail "jobs failed when a cache manager replica went away"
client generate --worker="${workers[0]}" --plaintext --prompt_ids=1 --max_tokens=50 >/dev/null || fail "a new job after the failover"
steps1_after="$(metric $((base_port + 3)) a2sf_cachemgr_steps_total)"
echo "replica 1 now: $steps1_after steps"
python3 -c "import sys; sys.exit(0 if float(sys.argv[2]) > float(sys.argv[1]) else 1)" "$steps1" "$steps1_after" \
  || fail "no session moved to the remaining replica"

echo "== the cache manager as a sidecar (deploy/k8s/overlays/cpu-sidecar): Unix socket + shared-memory ring =="
kubectl kustomize deploy/k8s/overlays/cpu-sidecar > "$dir/sidecar.yaml"
mkdir -p "$dir/sidecar" "$dir/models"
chown 10001:10001 "$dir/models"   # the empty model volume, filled by the initContainer (fsGroup 10001)
python3 scripts/k8s_rehearsal_adapt.py "$dir/sidecar.yaml" "$dir/sidecar" --prefix "$run_id-sc" --port-base "$((base_port + 100))" \
  --workers 1 --fixtures "$fixtures" --model stories260K-dq.bin --tokenizer tok512.bin --secret "$run_id-admin" \
  --fetch-into "$dir/models"
podman kube play "$dir/sidecar/worker-0.play.yaml" >>"$dir/play.log" 2>&1 || fail "podman kube play the sidecar pod"
sidecar_worker="127.0.0.1:$((base_port + 110))"
wait_healthy "$sidecar_worker" "the sidecar pod's worker"
for f in stories260K-dq.bin tok512.bin; do
  cmp -s "$fixtures/$f" "$dir/models/$f" || fail "the initContainer did not fetch $f onto the empty model volume"
done
echo "the initContainer fetched $(ls "$dir/models" | tr '\n' ' ')onto the empty model volume (sha256 checked)"
client generate --worker="$sidecar_worker" --plaintext --prompt="Once upon a time" --max_tokens=40 \
  --policy=a2sf --alpha=0.3 --budget_ratio=0.3 > "$dir/sidecar.txt" || fail "job through the sidecar pod"
grep "^job .*scores via shared memory" "$dir/sidecar.txt" \
  || fail "the sidecar pod's scores did not go through the shared-memory ring: $(tail -n 3 "$dir/sidecar.txt")"

echo "== tear down (podman kube down of every played file) =="
teardown
left="$(podman pod ps --filter "name=$run_id-" --format '{{.Name}}')"
[ -z "$left" ] || fail "pods left after the teardown: $left"
echo "k8s_rehearsal: passed"
