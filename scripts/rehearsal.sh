#!/usr/bin/env bash
# Scaled-out rehearsal on this machine: one cache manager and three workers on 127.0.0.1, 30 jobs
# through one client channel with round_robin over the three workers; then a worker is killed
# (SIGKILL) mid-run: its in-flight jobs fail with UNAVAILABLE while the others complete, and jobs
# marked idempotent are retried on the surviving workers.
#   scripts/rehearsal.sh                      # uses bazel-bin (run `bazel build //...` first)
#   scripts/rehearsal.sh CACHEMGR WORKER A2SF  # explicit binaries (the Bazel test passes these)
set -euo pipefail
cachemgr_bin="${1:-bazel-bin/cachemgr/service/a2sf-cachemgr}"
worker_bin="${2:-bazel-bin/worker/service/a2sf-worker}"
client_bin="${3:-bazel-bin/client/a2sf}"
fixtures="${A2SF_FIXTURES:-../shared/fixtures}"
if [ ! -f "$fixtures/stories260K-dq.bin" ]; then
  echo "rehearsal: SKIPPED: stories260K fixtures not found (set A2SF_FIXTURES)"; exit 0
fi
dir="$(mktemp -d "${TEST_TMPDIR:-/tmp}/rehearsal.XXXXXX")"
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_port() { for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "rehearsal: $1 never appeared"; cat "$dir"/*.log; exit 1; }

"$cachemgr_bin" --listen=127.0.0.1:0 --plaintext --port_file="$dir/cm.port" >"$dir/cm.log" 2>&1 &
pids+=($!)
wait_port "$dir/cm.port"
targets=()
for i in 1 2 3; do
  "$worker_bin" --model="$fixtures/stories260K-dq.bin" --listen=127.0.0.1:0 --plaintext --name="w$i" \
    --cachemgr="127.0.0.1:$(cat "$dir/cm.port")" --cachemgr_plaintext --port_file="$dir/w$i.port" >"$dir/w$i.log" 2>&1 &
  pids+=($!)
  wait_port "$dir/w$i.port"
  targets+=("127.0.0.1:$(cat "$dir/w$i.port")")
done
worker2_pid="${pids[2]}"
channel="ipv4:$(IFS=,; echo "${targets[*]}")"
run() { "$client_bin" generate --worker="$channel" --round_robin --plaintext --prompt_ids=1 --concurrency=6 --repeat=30 "$@"; }

echo "== 30 jobs over three workers =="
run --max_tokens=60 | tee "$dir/phase1.txt" | tail -n 1
summary="$(tail -n 1 "$dir/phase1.txt")"
for w in w1 w2 w3; do
  echo "$summary" | grep -q " $w=" || { echo "rehearsal: FAIL: no job ran on $w"; exit 1; }
done
echo "$summary" | grep -qE "(UNAVAILABLE|INTERNAL|CANCELLED)=" && { echo "rehearsal: FAIL: jobs failed"; exit 1; }

echo "== worker 2 killed mid-run =="
# Kill worker 2 as soon as it reports a running job, so the kill surely hits jobs in flight.
(
  for _ in $(seq 400); do
    if "$client_bin" jobs --worker="${targets[1]}" --plaintext 2>/dev/null | grep -q JOB_STATE_RUNNING; then
      kill -9 "$worker2_pid"; exit 0
    fi
    sleep 0.02
  done
) &
set +e
run --max_tokens=500 > "$dir/phase2.txt"
set -e
tail -n 1 "$dir/phase2.txt"
bad="$(grep -E '^job [0-9]+: ' "$dir/phase2.txt" | grep -v ': ok on ' | grep -v ': UNAVAILABLE: ' || true)"
[ -z "$bad" ] || { echo "rehearsal: FAIL: jobs failed other than with UNAVAILABLE:"; echo "$bad"; exit 1; }
grep -q ': UNAVAILABLE: ' "$dir/phase2.txt" || { echo "rehearsal: FAIL: no in-flight job saw the kill"; exit 1; }
[ "$(grep -c ': ok on ' "$dir/phase2.txt")" -ge 15 ] || { echo "rehearsal: FAIL: too few jobs survived"; exit 1; }
grep -E ': ok on w(1|3)' -q "$dir/phase2.txt" || { echo "rehearsal: FAIL: the other workers did not continue"; exit 1; }

echo "== idempotent jobs: a worker killed mid-run, its jobs retried on the others =="
"$worker_bin" --model="$fixtures/stories260K-dq.bin" --listen=127.0.0.1:0 --plaintext --name=w4 \
  --cachemgr="127.0.0.1:$(cat "$dir/cm.port")" --cachemgr_plaintext --port_file="$dir/w4.port" >"$dir/w4.log" 2>&1 &
worker4_pid=$!
pids+=("$worker4_pid")
wait_port "$dir/w4.port"
w4="127.0.0.1:$(cat "$dir/w4.port")"
channel="ipv4:${targets[0]},${targets[2]},$w4"
(
  for _ in $(seq 400); do
    if "$client_bin" jobs --worker="$w4" --plaintext 2>/dev/null | grep -q JOB_STATE_RUNNING; then
      kill -9 "$worker4_pid"; exit 0
    fi
    sleep 0.02
  done
) &
run --max_tokens=500 --idempotent > "$dir/phase3.txt" || true
tail -n 1 "$dir/phase3.txt"
grep -q "UNAVAILABLE" "$dir/phase3.txt" && { echo "rehearsal: FAIL: idempotent jobs were lost"; exit 1; }
[ "$(grep -c ': ok on ' "$dir/phase3.txt")" -eq 30 ] || { echo "rehearsal: FAIL: not every idempotent job completed"; exit 1; }
echo "rehearsal: passed"
