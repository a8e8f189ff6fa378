#!/usr/bin/env bash
# The GPU bundle and check as CI runs them (no GPU): the bundle is assembled from the built binaries
# and stays under 60 MiB; gpu_check.sh runs every binary from it with a cleared environment (env -i),
# passes, and reports each GPU step as skipped with a reason; with a library taken out of the bundle
# the check fails at its bundle step.
#   scripts/gpu_check_test.sh BINARY...   (the Bazel sh_test passes the binaries)
set -euo pipefail
scripts="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d "${TEST_TMPDIR:-/tmp}/gpu_check_test.XXXXXX")"
fail() { echo "gpu_check_test: FAIL: $*"; cat "$tmp"/results*/summary.txt 2>/dev/null || true; exit 1; }

bash "$scripts/gpu_bundle.sh" --no-build "$tmp/bundle" "$@"
[ "$(du -sk "$tmp/bundle" | cut -f1)" -le $((60 * 1024)) ] || fail "bundle over 60 MiB"
for b in "$@"; do [ -x "$tmp/bundle/bin/$(basename "$b")" ] || fail "no wrapper for $(basename "$b")"; done

# Cleared environment: only PATH, so nothing of the build machine's environment helps the bundle.
env -i PATH=/usr/bin:/bin bash "$scripts/gpu_check.sh" "$tmp/bundle" "$tmp/results" || fail "gpu_check.sh failed"
summary="$tmp/results/summary.txt"
cat "$summary"
for step in cuda_libs bundle cuda_info cuda_link_test cuda_score_store_test cuda_engine_test cuda_ipc_test \
            engine_bench forward_pass_gpu cachemgr_bench cuda_ipc_handoff services_cpu services_gpu total; do
  grep -q "^$step " "$summary" || fail "no line for step $step"
done
grep -q '^bundle  *pass ' "$summary" || fail "bundle step did not pass"
if ! grep -q '^GPUs: [1-9]' "$tmp/results/logs/cuda_info.log"; then
  # Without a GPU every GPU step is skipped, each with a reason.
  for step in cuda_link_test cuda_score_store_test cuda_engine_test cuda_ipc_test engine_bench forward_pass_gpu \
              cachemgr_bench cuda_ipc_handoff services_gpu; do
    grep -qE "^$step +skip .*(no usable GPU|without CUDA)" "$summary" || fail "step $step not skipped with a reason"
  done
fi
if [ -n "${A2SF_FIXTURES:-}" ] && [ -f "$A2SF_FIXTURES/stories260K-dq.bin" ]; then
  grep -q '^services_cpu  *pass ' "$summary" || fail "the CPU services did not pass"
fi
[ -s "$tmp/results/logs/cuda_info.log" ] || fail "no cuda_info log"

# A library missing from the bundle is caught by the check's first step (not at the GPU run).
rm "$tmp/bundle/lib/"libgrpc.so.*
if env -i PATH=/usr/bin:/bin bash "$scripts/gpu_check.sh" --bundle-only "$tmp/bundle" "$tmp/results2" > "$tmp/out2" 2>&1; then
  fail "gpu_check.sh passed with libgrpc missing from the bundle"
fi
grep -qE '^bundle +fail .*libgrpc\.so' "$tmp/results2/summary.txt" || fail "the bundle step did not name libgrpc"
echo "gpu_check_test: passed"
