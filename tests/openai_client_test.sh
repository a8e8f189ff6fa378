#!/usr/bin/env bash
# //tests:openai_client_test: a real worker with --http_listen, driven by the official openai npm client.
# node_modules comes from scripts/npm_install.sh through --test_env=A2SF_NODE_MODULES (scripts/test.sh
# passes it); without it the test skips, unless A2SF_REQUIRE_NODE=1 (CI) makes that a failure.
set -euo pipefail
worker="$1"
script="$2"
fixtures="${A2SF_FIXTURES:-}"
if [ -z "$fixtures" ] || [ ! -f "$fixtures/stories260K-dq.bin" ]; then
  echo "SKIP: stories260K fixtures not found (set A2SF_FIXTURES)"; exit 0
fi
if [ -z "${A2SF_NODE_MODULES:-}" ] || [ ! -d "${A2SF_NODE_MODULES}/openai" ] || ! command -v node >/dev/null; then
  echo "openai client not installed (run scripts/npm_install.sh and pass --test_env=A2SF_NODE_MODULES=.../node_modules)"
  if [ "${A2SF_REQUIRE_NODE:-0}" = 1 ]; then exit 1; fi
  echo "SKIP"; exit 0
fi
log="${TEST_TMPDIR:-/tmp}/worker.$$.log"
"$worker" --model="$fixtures/stories260K-dq.bin" --tokenizer="$fixtures/tok512.bin" --listen=127.0.0.1:0 \
    --plaintext --http_listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --name=http-test >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  grep -q "OpenAI-compatible API" "$log" && break
  kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
http_port=$(sed -n 's/.*OpenAI-compatible API on .*(port \([0-9]*\),.*/\1/p' "$log")
metrics_port=$(sed -n 's/.*metrics on .*(port \([0-9]*\)).*/\1/p' "$log")
[ -n "$http_port" ] && [ -n "$metrics_port" ] || { cat "$log"; exit 1; }
node "$script" "$A2SF_NODE_MODULES" "http://127.0.0.1:$http_port/v1" "http://127.0.0.1:$metrics_port/metrics" \
    stories260K-dq.bin || { cat "$log"; exit 1; }
