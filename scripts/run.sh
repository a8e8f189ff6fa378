#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds, starts a cache manager and a worker
# on this machine with the default model (stories260K), generates a story with A2SF through the whole
# path (client -> worker -> cache manager), prints it with the job's statistics, and stops the servers.
#
#   scripts/run.sh                 # the whole demo
#   scripts/run.sh --keep-running  # leave both servers running (their pids and addresses are printed)
#   PROMPT="Tom had a dog" POLICY=h2o BUDGET_RATIO=0.3 scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

keep_running=false
[ "${1:-}" = "--keep-running" ] && keep_running=true

bash scripts/setup.sh
echo "run: building (first time: a few minutes)"
bazel build //cachemgr/service:a2sf-cachemgr //worker/service:a2sf-worker //client:a2sf 2>&1 | tail -n 2

# The default model: the fixtures beside the checkout, else the sha256-pinned download.
fixtures="${A2SF_FIXTURES:-../shared/fixtures}"
model="$fixtures/stories260K-dq.bin"
tokenizer="$fixtures/tok512.bin"
if [ ! -f "$model" ] || [ ! -f "$tokenizer" ]; then
  echo "run: no fixtures in $fixtures; fetching stories260K from karpathy/tinyllamas (sha256-pinned)"
  if ! dir="$(bash scripts/fetch_model.sh)"; then
    echo "run: the default model could not be had. Set A2SF_FIXTURES to a folder holding"
    echo "     stories260K-dq.bin and tok512.bin, or A2SF_MODEL_DIR to one holding stories260K.bin and tok512.bin."
    exit 1
  fi
  model="$dir/stories260K.bin"
  tokenizer="$dir/tok512.bin"
fi

state="${A2SF_RUN_DIR:-/tmp/a2sf-run-$$}"
mkdir -p "$state"
socket="$state/cachemgr.sock"
rm -f "$state"/*.port "$socket"

bazel-bin/cachemgr/service/a2sf-cachemgr --listen=127.0.0.1:0 --plaintext --unix_socket="$socket" \
  --port_file="$state/cachemgr.port" >"$state/cachemgr.log" 2>&1 &
cachemgr_pid=$!
for _ in $(seq 100); do [ -s "$state/cachemgr.port" ] && break; sleep 0.1; done
bazel-bin/worker/service/a2sf-worker --model="$model" --tokenizer="$tokenizer" --listen=127.0.0.1:0 --plaintext \
  --cachemgr="unix:$socket" --port_file="$state/worker.port" >"$state/worker.log" 2>&1 &
worker_pid=$!
for _ in $(seq 100); do [ -s "$state/worker.port" ] && break; sleep 0.1; done

stop() {
  kill "$worker_pid" "$cachemgr_pid" 2>/dev/null || true
  wait "$worker_pid" "$cachemgr_pid" 2>/dev/null || true
  rm -rf "$state"
}
if [ "$keep_running" = false ]; then trap stop EXIT; fi

if [ ! -s "$state/cachemgr.port" ] || [ ! -s "$state/worker.port" ]; then
  echo "run: a server did not start; logs:"; cat "$state"/*.log; exit 1
fi
cachemgr="127.0.0.1:$(cat "$state/cachemgr.port")"
worker="127.0.0.1:$(cat "$state/worker.port")"
echo "run: cache manager on $cachemgr and unix:$socket, worker on $worker (plaintext, local only)"
echo

bazel-bin/client/a2sf generate --worker="$worker" --plaintext \
  --prompt="${PROMPT:-Once upon a time}" --max_tokens="${MAX_TOKENS:-200}" \
  --policy="${POLICY:-a2sf}" --alpha="${ALPHA:-0.6}" --budget_ratio="${BUDGET_RATIO:-0.2}"

if [ "$keep_running" = true ]; then
  echo
  echo "run: servers left running: cache manager pid $cachemgr_pid ($cachemgr), worker pid $worker_pid ($worker)"
  echo "     logs in $state; stop them with: kill $worker_pid $cachemgr_pid"
fi
