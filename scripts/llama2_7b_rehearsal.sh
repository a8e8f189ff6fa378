#!/usr/bin/env bash
# LLaMA-2-7B end to end on this machine: a synthetic model of LLaMA-2-7B's exact shape (32 layers, dim
# 4096, FFN 11008, 32 heads, vocab 32000, context 4096) written as GGUF q8_0 (~7.2 GB) and converted
# to a Hugging Face bf16 folder (~13.5 GB), each served by a2sf-cachemgr + a2sf-worker (co-located:
# Unix socket and shared-memory score ring) for one job: A2SF at a 20% budget, a 256-token prompt,
# 16 generated tokens (--prompt_tokens shortens the prompt). Reports per format: load time, peak RSS
# of each process, prefill time, tok/s,
# and the cache manager's mean step time; fails if the worker's peak RSS exceeds the model's file size
# + the job's KV bytes + 1 GiB.
#   scripts/llama2_7b_rehearsal.sh                  # the full 7B (needs ~21 GB under --dir, several minutes)
#   scripts/llama2_7b_rehearsal.sh --layers=2       # the 7B width at 2 layers (what CI runs)
# Options: --layers=N  --formats=gguf,hf  --dir=DIR (default /tmp)  --shape=NAME (a2sf-make-model's)
#          --threads=N  --prompt_tokens=N (256)  --kv_type=f32|f16|q8_0 (the worker's KV cache; f32)
#          --keep (leave the model files)
#          --make_model= --convert= --cachemgr= --worker= --client= (binaries; default: under bazel-bin)
set -euo pipefail
layers=0 formats="gguf,hf" base="${TEST_TMPDIR:-/tmp}" shape="llama2-7b" threads=2 keep=0 prompt_tokens=256
kv_type=f32
make_model=bazel-bin/worker/tools/a2sf-make-model convert=bazel-bin/worker/tools/a2sf-convert
cachemgr=bazel-bin/cachemgr/service/a2sf-cachemgr worker=bazel-bin/worker/service/a2sf-worker client=bazel-bin/client/a2sf
for arg in "$@"; do
  case "$arg" in
    --layers=*) layers="${arg#*=}" ;;
    --formats=*) formats="${arg#*=}" ;;
    --dir=*) base="${arg#*=}" ;;
    --shape=*) shape="${arg#*=}" ;;
    --threads=*) threads="${arg#*=}" ;;
    --prompt_tokens=*) prompt_tokens="${arg#*=}" ;;
    --kv_type=*) kv_type="${arg#*=}" ;;
    --make_model=*) make_model="${arg#*=}" ;;
    --convert=*) convert="${arg#*=}" ;;
    --cachemgr=*) cachemgr="${arg#*=}" ;;
    --worker=*) worker="${arg#*=}" ;;
    --client=*) client="${arg#*=}" ;;
    --keep) keep=1 ;;
    *) echo "llama2_7b_rehearsal: unknown option $arg" >&2; exit 2 ;;
  esac
done
for b in "$make_model" "$convert" "$cachemgr" "$worker" "$client"; do
  [ -x "$b" ] || { echo "llama2_7b_rehearsal: $b not built (bazel build //worker/tools:all //worker/service:a2sf-worker //cachemgr/service:a2sf-cachemgr //client:a2sf)" >&2; exit 2; }
done
dir="$(mktemp -d "$base/a2sf-7b.XXXXXX")"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ "$keep" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT
now_ms() { echo $(($(date +%s%N) / 1000000)); }
since() { awk -v t0="$1" -v t1="$(now_ms)" 'BEGIN { printf "%.1f", (t1 - t0) / 1000 }'; }
peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_file() {  # wait_file FILE PID SECONDS
  for _ in $(seq $(($3 * 10))); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "llama2_7b_rehearsal: process $2 died:"; cat "$dir"/*.log; exit 1; }
    sleep 0.1
  done
  echo "llama2_7b_rehearsal: $1 never appeared"; cat "$dir"/*.log; exit 1
}

layer_flag=()
[ "$layers" != 0 ] && layer_flag=(--layers="$layers")
gguf="$dir/llama2-7b-q8_0.gguf" hf="$dir/llama2-7b-hf-bf16"
echo "== writing $shape ${layers/#0/all} layers as GGUF q8_0 =="
t0=$(now_ms)
"$make_model" --shape="$shape" "${layer_flag[@]}" --format=gguf --weights=q8_0 --out="$gguf"
sync  # the file's write-back would otherwise run during the serve below
echo "   $(du -b "$gguf" | cut -f1) bytes in $(since "$t0") s"
# A fixed prompt: BOS and ids among 3..258 (the byte tokens every LLaMA vocabulary has).
prompt="1$(python3 -c "print(''.join(',%d' % (3 + (i * 7919) % 256) for i in range($prompt_tokens - 1)))")"

serve() {  # serve NAME MODEL_PATH MODEL_BYTES
  local name="$1" model="$2" model_bytes="$3"
  # Under /tmp: a Unix socket path must stay under 108 bytes (TEST_TMPDIR's are longer).
  local sock="/tmp/a2sf-7b-cm-$$-$name.sock" metrics_port
  metrics_port="$(free_port)"
  "$cachemgr" --listen=127.0.0.1:0 --plaintext --unix_socket="$sock" --metrics_listen="127.0.0.1:$metrics_port" \
    --port_file="$dir/cm-$name.port" >"$dir/cm-$name.log" 2>&1 &
  local cm_pid=$!
  pids+=("$cm_pid")
  wait_file "$dir/cm-$name.port" "$cm_pid" 30
  local t0 load_s
  t0=$(now_ms)
  "$worker" --model="$model" --listen=127.0.0.1:0 --plaintext --cachemgr="unix:$sock" --threads="$threads" \
    --kv_type="$kv_type" --port_file="$dir/w-$name.port" >"$dir/w-$name.log" 2>&1 &
  local w_pid=$!
  pids+=("$w_pid")
  wait_file "$dir/w-$name.port" "$w_pid" 1800
  load_s=$(since "$t0")
  "$client" generate --worker="127.0.0.1:$(cat "$dir/w-$name.port")" --plaintext --prompt_ids="$prompt" \
    --max_tokens=16 --policy=a2sf --budget_ratio=0.2 --json >"$dir/job-$name.json"
  local w_rss cm_rss
  w_rss=$(peak_rss_kb "$w_pid") cm_rss=$(peak_rss_kb "$cm_pid")
  curl -s "http://127.0.0.1:$metrics_port/metrics" >"$dir/metrics-$name.txt" || true
  kill "$w_pid" "$cm_pid"
  wait "$w_pid" "$cm_pid" 2>/dev/null || true
  rm -f "$sock"
  python3 - "$name" "$dir/job-$name.json" "$dir/metrics-$name.txt" "$load_s" "$w_rss" "$cm_rss" "$model_bytes" \
    "$kv_type" <<'EOF'
import json, re, sys
name, job_file, metrics_file, load_s, w_rss_kb, cm_rss_kb, model_bytes, kv_type = sys.argv[1:]
stats = json.load(open(job_file))["stats"]
def stat(key, default=0):
    return float(stats.get(key, stats.get(re.sub(r"_(\w)", lambda m: m.group(1).upper(), key), default)))
step_sum = step_count = 0.0
for line in open(metrics_file):
    if line.startswith("a2sf_cachemgr_step_seconds_sum"):
        step_sum = float(line.split()[-1])
    elif line.startswith("a2sf_cachemgr_step_seconds_count"):
        step_count = float(line.split()[-1])
kv = stat("kv_bytes_peak")
w_rss, cm_rss = int(w_rss_kb) * 1024, int(cm_rss_kb) * 1024
limit = int(model_bytes) + kv + (1 << 30)
print(f"{name}: load {float(load_s):.1f} s | prefill (time to first token) {stat('time_to_first_token_ms') / 1e3:.2f} s | "
      f"{stat('tokens_per_second'):.2f} tok/s | generated {int(stat('generated_tokens'))} | evictions {int(stat('evictions'))} | "
      f"KV peak {kv / 2**20:.1f} MiB ({kv_type})")
print(f"{name}: peak RSS worker {w_rss / 2**30:.2f} GiB (limit file + KV + 1 GiB = {limit / 2**30:.2f} GiB), "
      f"cache manager {cm_rss / 2**20:.0f} MiB | cache-manager step "
      + (f"{step_sum / step_count * 1e3:.3f} ms mean over {int(step_count)} steps" if step_count else "not reported"))
if int(stat("generated_tokens")) != 16:
    sys.exit(f"{name}: FAIL: {int(stat('generated_tokens'))} tokens generated, expected 16")
if w_rss > limit:
    sys.exit(f"{name}: FAIL: the worker's peak RSS exceeds file size + KV + 1 GiB")
EOF
}

# Each file is served while it is the only model in the page cache: the 7B's two files (20 GB) do not
# both fit a 24 GB machine's, and a served file whose pages were evicted is read from disk at every
# token (the first rehearsal decoded q8_0 at half its speed that way). So q8_0 is served before the
# bf16 folder is written, and the GGUF is removed (unless --keep) before the folder is served.
if [[ ",$formats," == *",gguf,"* ]]; then
  echo "== serving GGUF q8_0 =="
  serve gguf "$gguf" "$(du -b "$gguf" | cut -f1)"
fi
if [[ ",$formats," == *",hf,"* ]]; then
  echo "== converting to a Hugging Face bf16 folder =="
  t0=$(now_ms)
  "$convert" --in="$gguf" --out="$hf" --format=hf --weights=bf16
  sync
  echo "   $(du -sb "$hf" | cut -f1) bytes in $(since "$t0") s"
  [ "$keep" = 1 ] || rm -f "$gguf"
  echo "== serving HF bf16 =="
  serve hf "$hf" "$(du -sb "$hf" | cut -f1)"
fi
echo "llama2_7b_rehearsal: PASS"
