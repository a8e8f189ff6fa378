#!/usr/bin/env bash
# One-shot check of every GPU path, from a bundle made by scripts/gpu_bundle.sh; no build step.
#   scripts/gpu_check.sh [--bundle-only] DIR RESULTS   (--bundle-only: stop after the library checks)
# Steps: the bundle is self-contained; the CUDA runtime, cuBLAS and NCCL are found ($LD_LIBRARY_PATH,
# the usual install paths, or Python `nvidia-*` wheels) and the driver; cuda_info; the CUDA tests;
# engine_bench's GPU rows (stories260K, 110M shape); forward_pass_bench --device=cuda (the batched
# device step of 1..16 rows against the same rows one after another, 110M shape); cachemgr_bench on the CUDA store at LLaMA-2-7B
# shape (decision alone, shared-memory ring hand-off, gRPC, and the CUDA IPC device-resident hand-off as
# its own line, cuda_ipc_handoff); the services (a2sf-cachemgr
# --backend=cuda + a2sf-worker --device=cuda over a Unix socket): a greedy job per policy, tokens
# compared with the same jobs on the CPU stack started here; last, the CUDA tests again under
# `compute-sanitizer --tool memcheck` where it exists, in the time left of the 8 minutes. RESULTS gets summary.txt
# (one line per step: pass, fail or skip, with figures or the reason) and logs/. Without a GPU every
# binary still runs, each GPU step reports "skip" with the reason, and the exit status is 0 unless a
# step failed; CI runs it that way with a cleared environment (scripts/gpu_check_test.sh).
set -uo pipefail
bundle_only=no
if [ "${1:-}" = "--bundle-only" ]; then bundle_only=yes; shift; fi
[ $# -eq 2 ] || { echo "usage: $0 [--bundle-only] BUNDLE_DIR RESULTS_DIR" >&2; exit 2; }
bundle="$(cd "$1" && pwd)" || exit 2
mkdir -p "$2/logs" && results="$(cd "$2" && pwd)"
logs="$results/logs"
summary="$results/summary.txt"
: > "$summary"
start_s=$SECONDS
export PATH="${PATH:-/usr/bin:/bin}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
failed=0

# record STEP pass|fail|skip DETAIL
record() {
  printf '%-24s %-5s %s\n' "$1" "$2" "$3" | tee -a "$summary"
  [ "$2" != fail ] || failed=1
}
# run_logged STEP TIMEOUT_S CMD...: runs CMD with its output in logs/STEP.log; returns its status.
# Each step's limit is cut to what is left of the 8 minutes (status 124 when nothing is).
budget_s=470
run_logged() {
  local step="$1" limit="$2"; shift 2
  local left=$((budget_s - (SECONDS - start_s)))
  [ "$limit" -le "$left" ] || limit="$left"
  echo "\$ $*" > "$logs/$step.log"
  if [ "$limit" -lt 5 ]; then echo "gpu_check: out of the 8-minute budget" >> "$logs/$step.log"; return 124; fi
  local t0=$SECONDS rc=0
  timeout --kill-after=5 "$limit" "$@" >> "$logs/$step.log" 2>&1 || rc=$?
  echo "gpu_check: exit status $rc after $((SECONDS - t0)) s" >> "$logs/$step.log"
  return "$rc"
}
bin() { echo "$bundle/bin/$1"; }

# --- 1. the CUDA libraries -------------------------------------------------------------------------
candidate_dirs() {
  local IFS=:
  for d in ${LD_LIBRARY_PATH:-}; do [ -n "$d" ] && echo "$d"; done
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
           /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/local/lib /opt/conda/lib; do
    [ -d "$d" ] && echo "$d"
  done
  # Python wheels (nvidia-cuda-runtime-cu13, nvidia-cublas-cu13, nvidia-nccl-cu13, ...): nvidia/*/lib.
  for py in python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    "$py" - <<'PY' 2>/dev/null
import os
try:
    import nvidia
except ImportError:
    raise SystemExit
for root in list(nvidia.__path__):
    for name in sorted(os.listdir(root)):
        lib = os.path.join(root, name, "lib")
        if os.path.isdir(lib):
            print(lib)
PY
  done
  for d in /usr/local/lib/python3*/*-packages/nvidia/*/lib /usr/lib/python3*/*-packages/nvidia/*/lib \
           "${HOME:-/nonexistent}"/.local/lib/python3*/site-packages/nvidia/*/lib; do
    [ -d "$d" ] && echo "$d"
  done
}
cuda_path=""
libs_detail=""
missing=""
dirs="$(candidate_dirs | awk '!seen[$0]++')"
for soname in $(cat "$bundle/cuda_libs.txt" 2>/dev/null) libcuda.so.1; do
  found=""
  for d in $dirs; do
    if [ -e "$d/$soname" ]; then found="$d"; break; fi
  done
  if [ -z "$found" ] && [ "$soname" = libcuda.so.1 ] && command -v ldconfig >/dev/null 2>&1; then
    found="$(ldconfig -p 2>/dev/null | awk -v s="$soname" '$1 == s {print $NF; exit}' | xargs -r dirname)"
  fi
  if [ -n "$found" ]; then
    libs_detail+="$soname=$found "
    case ":$cuda_path:" in *":$found:"*) ;; *) cuda_path="${cuda_path:+$cuda_path:}$found" ;; esac
  else
    libs_detail+="$soname=MISSING "
    missing+="$soname "
  fi
done
echo "CUDA library search order: ${dirs//$'\n'/ }" > "$logs/cuda_libs.log"
echo "$libs_detail" >> "$logs/cuda_libs.log"
# The wrappers put the bundle's lib/ first; the CUDA libraries found come after it.
export LD_LIBRARY_PATH="$cuda_path"
if [ -z "$missing" ]; then record cuda_libs pass "$libs_detail"; else record cuda_libs skip "$libs_detail"; fi

# --- 2. the bundle is self-contained: every library resolves to lib/, glibc or a CUDA library -------
bad=""
for real in "$bundle"/libexec/*; do
  name="$(basename "$real")"
  while read -r lib path; do
    case "$lib" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|linux-vdso*) continue ;;
      libcuda.so*|libcudart.so*|libcublas*.so*|libnccl.so*) continue ;;  # the machine's
    esac
    case "$path" in "$bundle/lib/"*) ;; *) bad+="$name:$lib->${path:-not found} " ;; esac
  done < <(LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$real" 2>&1 \
             | awk '/=>/ {print $1, ($3 == "not" ? "" : $3)}')
done
if [ -z "$bad" ]; then
  record bundle pass "$(ls "$bundle/libexec" | wc -l) binaries, $(du -sm "$bundle" | cut -f1) MiB; $(head -n 1 "$bundle/MANIFEST")"
else
  record bundle fail "libraries not in the bundle: $bad"
fi
[ "$bundle_only" = no ] || exit "$failed"

# --- 3. cuda_info ----------------------------------------------------------------------------------
gpu=no
if run_logged cuda_info 30 "$(bin cuda_info)"; then
  if grep -q '^GPUs: [1-9]' "$logs/cuda_info.log"; then gpu=yes; fi
  record cuda_info pass "$(grep -v '^\$' "$logs/cuda_info.log" | tr '\n' ' ')"
else
  record cuda_info fail "exit status $? (see logs/cuda_info.log)"
fi
no_gpu_reason="no usable GPU: $(sed -n 's/^GPUs: none (\(.*\)); .*/\1/p' "$logs/cuda_info.log" | head -n 1)"
[ -z "$missing" ] || no_gpu_reason="$no_gpu_reason; missing: $missing"
export A2SF_FIXTURES="$bundle/fixtures"  # tests skip with a message when the files are absent

# --- 4. the CUDA tests (they skip inside without a GPU) ----------------------------------------------
tests=$(cd "$bundle/libexec" && ls | grep -E '^cuda_.*_test$')
for t in $tests; do
  if run_logged "$t" 180 "$(bin "$t")"; then
    skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) tests\{0,1\}, listed below.*/\1/p' "$logs/$t.log")
    skipped=${skipped:-0}  # gtest's own count (each skipped test's name is printed twice)
    passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$logs/$t.log")
    if [ "$gpu" = yes ]; then record "$t" pass "${passed:-0} passed, ${skipped} skipped"
    else record "$t" skip "ran, ${skipped} skipped inside: $no_gpu_reason"; fi
  else
    record "$t" fail "exit status $? (see logs/$t.log)"
  fi
done
# --- 5. benchmarks ----------------------------------------------------------------------------------
if run_logged engine_bench 150 "$(bin engine_bench)" gpu; then
  if [ "$gpu" = yes ]; then
    # Rows: model, "gpu", policy, tok/s, KV peak bytes, weight GB/s, "-".
    record engine_bench pass "model gpu policy tok/s KV-bytes weight-GB/s: $(grep -E ' gpu ' "$logs/engine_bench.log" | tr -s ' ' | sed 's/ -$//' | paste -sd ';' -)"
  else
    record engine_bench skip "ran; GPU rows: $no_gpu_reason"
  fi
else
  record engine_bench fail "exit status $? (see logs/engine_bench.log)"
fi
# The batched device step (one step for all rows) against the same rows run one after another (each
# engine's one-row step): ms per step for 1, 2, 4, 8 and 16 rows, 110M shape, fp32.
if run_logged forward_pass_gpu 90 "$(bin forward_pass_bench)" --device=cuda --steps=8; then
  if [ "$gpu" = yes ]; then
    record forward_pass_gpu pass "rows batched-ms serial-ms tok/s serial/batched: $(grep -E '^ +[0-9]+ ' "$logs/forward_pass_gpu.log" | tr -s ' ' | sed 's/^ //' | paste -sd ';' -)"
  else
    record forward_pass_gpu fail "ran without a GPU instead of refusing (see logs/forward_pass_gpu.log)"
  fi
else
  rc=$?
  if [ "$gpu" != yes ] && [ "$rc" = 1 ] && grep -q '^cuda: ' "$logs/forward_pass_gpu.log"; then
    record forward_pass_gpu skip "$no_gpu_reason"
  else
    record forward_pass_gpu fail "exit status $rc (see logs/forward_pass_gpu.log)"
  fi
fi
if [ "$gpu" = yes ]; then
  if run_logged cachemgr_bench 150 "$(bin cachemgr_bench)" cuda; then
    record cachemgr_bench pass "$(grep -E '^(decision only|shared-memory ring|gRPC over Unix|CUDA IPC)' "$logs/cachemgr_bench.log" | awk '{printf "%s ms; ", $0}' | tr -s ' ')"
  else
    record cachemgr_bench fail "exit status $? (see logs/cachemgr_bench.log)"
  fi
  # The device-resident hand-off (CUDA IPC) at 7B shape: ms per step (hand-off + decision) and the
  # hand-off alone (minus the decision on host-uploaded scores); the target is well under 0.1 ms.
  ipc_row="$(grep -E '^CUDA IPC' "$logs/cachemgr_bench.log" | head -n 1)"
  if echo "$ipc_row" | grep -qE 'fp32 +[0-9.]+ +-?[0-9.]+$'; then
    read -r per_step handoff < <(echo "$ipc_row" | awk '{print $(NF-1), $NF}')
    verdict="$(awk -v s="$per_step" 'BEGIN {print (s < 0.1 ? "under" : "NOT under")}')"
    record cuda_ipc_handoff pass "7B shape: ${per_step} ms per step (hand-off + decision, ${verdict} 0.1 ms), hand-off ${handoff} ms"
  else
    record cuda_ipc_handoff fail "no figures: ${ipc_row:-no CUDA IPC row} (see logs/cachemgr_bench.log)"
  fi
else
  # Still runs the binary: without a GPU it must refuse the CUDA store with a reason, not crash.
  run_logged cachemgr_bench 60 "$(bin cachemgr_bench)" cuda
  rc=$?
  if [ "$rc" = 1 ] && grep -q '^cuda store: ' "$logs/cachemgr_bench.log"; then
    record cachemgr_bench skip "$no_gpu_reason"
  else
    record cachemgr_bench fail "without a GPU: exit status $rc (see logs/cachemgr_bench.log)"
  fi
  record cuda_ipc_handoff skip "$no_gpu_reason"
fi

# --- 6. the services: GPU stack vs CPU stack, greedy, one job per policy ------------------------------
policies="full local streaming_llm h2o tova a2sf"
# wait_file FILE PID: until FILE has content (30 s), or PID has exited.
wait_file() {
  for _ in $(seq 300); do [ -s "$1" ] && return 0; kill -0 "$2" 2>/dev/null || return 1; sleep 0.1; done
  return 1
}
# stack NAME BACKEND DEVICE: starts a cache manager and a worker; sets $worker_addr. Returns 1 on failure.
# fp32 scores on both stacks: the GPU stack's device-resident hand-off (CUDA IPC) carries the engine's
# fp32 scores, so both decide on the same values.
stack() {
  local name="$1" backend="$2" device="$3" sock="$work/$1.sock"
  "$(bin a2sf-cachemgr)" --listen=127.0.0.1:0 --plaintext --port_file="$work/$name-cm.port" \
    --unix_socket="$sock" --backend="$backend" > "$logs/services_$name-cachemgr.log" 2>&1 &
  pids+=($!)
  wait_file "$work/$name-cm.port" $! || return 1
  "$(bin a2sf-worker)" --model="$bundle/fixtures/stories260K-dq.bin" --tokenizer="$bundle/fixtures/tok512.bin" \
    --listen=127.0.0.1:0 --plaintext --port_file="$work/$name-w.port" --cachemgr="unix:$sock" \
    --device="$device" --score_dtype=fp32 > "$logs/services_$name-worker.log" 2>&1 &
  pids+=($!)
  wait_file "$work/$name-w.port" $! || return 1
  worker_addr="127.0.0.1:$(cat "$work/$name-w.port")"
}
# run_jobs NAME: one greedy job per policy; ids to $work/NAME.POLICY.ids. Returns the failures.
run_jobs() {
  local name="$1" bad=0
  for p in $policies; do
    if run_logged "services_$name-$p" 60 "$(bin a2sf)" generate --worker="$worker_addr" --plaintext --json \
         --prompt="Once upon a time" --max_tokens=96 --policy="$p" --budget_ratio=0.3 --logprobs=2; then
      grep -o '"ids":\[[0-9,]*\]' "$logs/services_$name-$p.log" > "$work/$name.$p.ids"
    else
      bad=$((bad + 1))
    fi
  done
  return "$bad"
}
# first_difference A B: the 1-based index of the first token id where the '"ids":[...]' files differ.
first_difference() {
  local a b i=1
  a="$(grep -o '[0-9][0-9,]*' "$1" | tr ',' ' ')"; b="$(grep -o '[0-9][0-9,]*' "$2" | tr ',' ' ')"
  set -- $b
  for id in $a; do
    [ "$id" = "${1:-}" ] || break
    i=$((i + 1)); shift
  done
  echo "$i"
}
# top2_gap LOG K: the gap in nats between the two most likely tokens where the job in LOG (a2sf generate
# --json --logprobs=2) chose its K-th token (1-based); empty without python3 or that token.
top2_gap() {
  command -v python3 >/dev/null 2>&1 || return 0
  python3 - "$1" "$2" <<'PY' 2>/dev/null
import json, sys
for line in open(sys.argv[1]):
    if line.startswith('{"ids"'):
        top = json.loads(line)["logprobs"][int(sys.argv[2]) - 1]["top"]
        print("%.6f" % (top[0]["logprob"] - top[1]["logprob"]))
PY
}
if [ ! -f "$bundle/fixtures/stories260K-dq.bin" ]; then
  record services_cpu skip "no stories260K fixtures in the bundle"
  cpu_ok=no
elif stack cpu cpu cpu && run_jobs cpu; then
  record services_cpu pass "6 policies over the Unix socket (shared-memory ring)"
  cpu_ok=yes
else
  record services_cpu fail "see logs/services_cpu-*.log"
  cpu_ok=no
fi
if [ "$gpu" != yes ]; then
  record services_gpu skip "$no_gpu_reason"
elif [ "$cpu_ok" != yes ]; then
  record services_gpu skip "the CPU stack failed: nothing to compare with"
elif stack gpu cuda cuda && run_jobs gpu; then
  # The GPU's logits follow the CPU's to ~1e-4, not bit for bit (another summation order, expf): where
  # this small model's two best tokens are that close, greedy decoding may pick the other. So where the
  # tokens part is found, and the parting is excused only at such a near-tie of the CPU's (top-2 gap
  # under 1e-3 nats, from its logprobs); anywhere else -- a broken score store, hand-off or eviction
  # path makes the caches, and then the tokens, differ -- the step fails.
  differ="" broken=""
  for p in $policies; do
    cmp -s "$work/cpu.$p.ids" "$work/gpu.$p.ids" && continue
    at="$(first_difference "$work/cpu.$p.ids" "$work/gpu.$p.ids")"
    gap="$(top2_gap "$logs/services_cpu-$p.log" "$at")"
    differ+="$p from token $at (CPU top-2 gap ${gap:-unknown}); "
    awk -v g="${gap:-1}" 'BEGIN { exit !(g < 0.001) }' || broken+="$p "
  done
  ipc_jobs="$(grep -c 'scores stay on the GPU (CUDA IPC)' "$logs/services_gpu-worker.log")"
  ipc_note="CUDA IPC hand-off in $ipc_jobs of 6 jobs$(grep -m1 -o 'CUDA IPC refused.*' "$logs/services_gpu-worker.log" | sed 's/^/; /')"
  if [ -z "$differ" ]; then record services_gpu pass "tokens equal to the CPU stack under all 6 policies; $ipc_note"
  elif [ -z "$broken" ]; then record services_gpu pass "tokens part from the CPU stack's only at near-ties: ${differ}equal under the others (ids in logs/services_*); $ipc_note"
  else record services_gpu fail "tokens part from the CPU stack's away from a near-tie under: $broken(${differ}ids in logs/services_*); $ipc_note"; fi
else
  record services_gpu fail "see logs/services_gpu-*.log"
fi

# --- 7. the CUDA tests under compute-sanitizer, last: slow, so they get the time that is left --------
sanitizer=""
for s in compute-sanitizer /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer \
         $(for d in $dirs; do  # a toolkit's lib64/.., or the nvidia-cuda-sanitizer-api wheel beside the others
             echo "$d/../compute-sanitizer/compute-sanitizer" "$d/../../cuda_sanitizer_api/compute-sanitizer/compute-sanitizer"
           done); do
  if command -v "$s" >/dev/null 2>&1; then sanitizer="$(command -v "$s")"; break; fi
done
for t in $tests; do
  if [ "$gpu" != yes ]; then record "memcheck:$t" skip "$no_gpu_reason"; continue; fi
  if [ -z "$sanitizer" ]; then record "memcheck:$t" skip "compute-sanitizer not found"; continue; fi
  LD_LIBRARY_PATH="$bundle/lib:$LD_LIBRARY_PATH" run_logged "memcheck_$t" 240 "$sanitizer" --tool memcheck \
    --error-exitcode 9 "$bundle/libexec/$t"
  rc=$?
  if [ "$rc" = 0 ]; then record "memcheck:$t" pass "$(grep -m1 'ERROR SUMMARY' "$logs/memcheck_$t.log")"
  elif [ "$rc" = 124 ]; then record "memcheck:$t" skip "ran out of the 8 minutes (see logs/memcheck_$t.log)"
  else record "memcheck:$t" fail "exit status $rc (see logs/memcheck_$t.log)"; fi
done

record total "$([ $failed = 0 ] && echo pass || echo fail)" "$((SECONDS - start_s)) s, GPU: $gpu"
exit "$failed"
