#!/bin/bash
# The command-line surface: every binary's --help (exit 0, its own flags) and --version; a2sf's
# subcommands list their own flags; conflicting or unused options are refused (exit 2) with a
# message; a2sf generate and a2sf-generate print one JSON schema; `a2sf policy set --job` swaps a
# running job's policy; a cancelled job exits 4 with its finish reason; --timeout_s bounds a job;
# --repeat/--concurrency queue behind a worker's --max_batch.
set -u
F="${A2SF_FIXTURES:-}"
if [[ -z "$F" || ! -f "$F/stories260K-dq.bin" ]]; then echo "SKIP: A2SF_FIXTURES not set"; exit 0; fi
A2SF=client/a2sf
GEN=worker/tools/a2sf-generate
WORKER=worker/service/a2sf-worker
CACHEMGR=cachemgr/service/a2sf-cachemgr
EVAL=eval/a2sf-eval
MAKE_MODEL=worker/tools/a2sf-make-model
T="${TEST_TMPDIR:-$(mktemp -d)}"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

for b in $A2SF $GEN $WORKER $CACHEMGR $EVAL $MAKE_MODEL; do
  out=$($b --help 2>&1) || fail "$b --help exits $?"
  grep -q -- "--help" <<<"$out" || fail "$b --help lists no flags"
  [[ "$($b --version)" == *" 0.1.0" ]] || fail "$b --version: $($b --version)"
  $b --helpshort >"$T/short" 2>&1 || fail "$b --helpshort exits $?"
  cmp -s "$T/short" <(echo "$out") || fail "$b --helpshort differs from --help"
  $b --helpfull >"$T/full" 2>&1 || fail "$b --helpfull exits $?"
  grep -q -- "--flagfile" "$T/full" || fail "$b --helpfull misses Abseil's --flagfile"
  while read -r flag; do  # every flag --help lists is in --helpfull too
    grep -q -- "$flag" "$T/full" || fail "$b --helpfull misses $flag"
  done < <(grep -o -- '^  --[a-z_0-9]*' <<<"$out")
  $b --helpmatch=version >"$T/match" 2>&1 || fail "$b --helpmatch exits $?"
done
$GEN --helpmatch=top_ | grep -q -- "--top_k" || fail "a2sf-generate --helpmatch=top_ misses --top_k"
$GEN --helpmatch=top_ | grep -q -- "--max_tokens " && fail "a2sf-generate --helpmatch=top_ lists --max_tokens"
$GEN --help | grep -q -- "--top_k" || fail "a2sf-generate --help misses --top_k"
$WORKER --help | grep -q -- "--model_name" || fail "a2sf-worker --help misses --model_name"
$CACHEMGR --help | grep -q -- "--max_sessions" || fail "a2sf-cachemgr --help misses --max_sessions"
$EVAL --help | grep -q -- "--corpus" || fail "a2sf-eval --help misses --corpus"
for cmd in generate policy jobs cancel model health; do
  $A2SF $cmd --help >"$T/help" 2>&1 || fail "a2sf $cmd --help exits $?"
  head -1 "$T/help" | grep -q "^a2sf $cmd " || fail "a2sf $cmd --help shows $(head -1 "$T/help")"
  $A2SF $cmd --helpfull >"$T/full" 2>&1 || fail "a2sf $cmd --helpfull exits $?"
  head -1 "$T/full" | grep -q "^a2sf $cmd " || fail "a2sf $cmd --helpfull shows $(head -1 "$T/full")"
  grep -q -- "--flagfile" "$T/full" || fail "a2sf $cmd --helpfull misses Abseil's --flagfile"
done
$A2SF generate --helpfull | grep -q -- "--cachemgr " || fail "a2sf generate --helpfull misses --cachemgr (a flag of another command)"
$A2SF generate --help | grep -q -- "--min_p" || fail "a2sf generate --help misses --min_p"
$A2SF generate --help | grep -q -- "--cachemgr " && fail "a2sf generate --help lists --cachemgr"
$A2SF policy --help | grep -q -- "--job " || fail "a2sf policy --help misses --job"
$A2SF jobs --help | grep -q -- "--token " || fail "a2sf jobs --help misses --token"
$A2SF cancel --help | grep -q -- "--job_token " || fail "a2sf cancel --help misses --job_token"

refused() {  # refused MESSAGE_PART COMMAND...: exits 2 and says why
  local want="$1"; shift
  out=$("$@" 2>&1); rc=$?
  [[ $rc == 2 ]] || fail "$* exits $rc, not 2"
  grep -q -- "$want" <<<"$out" || fail "$*: no '$want' in: $out"
}
refused "give --policy" $A2SF generate --alpha=0.5 --plaintext
refused "conflicts with --budget_ratio" $A2SF generate --policy=a2sf --budget_tokens=8 --budget_ratio=0.2
refused "greedy" $A2SF generate --top_p=0.9
refused "greedy" $A2SF generate --seed=3
refused "--layer_alphas overrides" $A2SF generate --policy=a2sf --alpha=0.5 --layer_alphas=0.1,0.2
refused "applies to --repeat" $A2SF generate --concurrency=8
refused "repetition_penalty: must be > 0" $A2SF generate --repetition_penalty=0 --plaintext
refused "does not apply to --score" $GEN --model="$F/stories260K-dq.bin" --prompt_ids=1,403 --score --max_tokens=5
refused "does not apply to --score" $GEN --model="$F/stories260K-dq.bin" --prompt_ids=1,403 --score --min_tokens=1
# --score: the prompt's logprobs (one per token after the first), nothing generated.
$GEN --model="$F/stories260K-dq.bin" --prompt_ids=1,403,407,261 --score --json >"$T/score.json" 2>/dev/null \
  || fail "a2sf-generate --score exits $?"
grep -q '^{"ids":\[\],' "$T/score.json" \
  && [[ "$(grep -o '"token":{"id":[0-9]*' "$T/score.json" | cut -d: -f3 | paste -sd,)" == 403,407,261 ]] \
  && grep -q '"finish_reason":"FINISH_REASON_MAX_TOKENS"' "$T/score.json" \
  || fail "a2sf-generate --score: $(head -c 300 "$T/score.json")"
refused "give --policy" $GEN --model="$F/stories260K-dq.bin" --recent_window=4
refused "full cache" $GEN --model="$F/stories260K-dq.bin" --prompt_ids=1 --budget_tokens=8
refused "conflicts with --prompt" $GEN --model="$F/stories260K-dq.bin" --prompt=a --prompt_ids=1

# A worker on a slower random model (so that a job runs long enough to act on), policies remote.
$MAKE_MODEL --shape=stories110M --layers=1 --out="$T/slow.bin" >/dev/null || fail "make-model"
$CACHEMGR --listen=127.0.0.1:0 --plaintext --port_file="$T/cm.port" 2>"$T/cm.log" &
CM=$!
for _ in $(seq 100); do [[ -s "$T/cm.port" ]] && break; sleep 0.1; done
$WORKER --model="$F/stories260K-dq.bin" --tokenizer="$F/tok512.bin" --listen=127.0.0.1:0 --plaintext \
  --cachemgr=127.0.0.1:$(cat "$T/cm.port") --cachemgr_plaintext --port_file="$T/w.port" 2>"$T/w.log" &
W=$!
# Its jobs are read and cancelled by other processes than the one that submitted them: the admin token.
# Its KV cache is f16 (--kv_type), which its jobs' statistics show.
$WORKER --model="$T/slow.bin" --listen=127.0.0.1:0 --plaintext --admin_token=cli-test --kv_type=f16 \
  --cachemgr=127.0.0.1:$(cat "$T/cm.port") --cachemgr_plaintext --port_file="$T/slow.port" 2>"$T/slow.log" &
SLOW=$!
trap 'kill $CM $W $SLOW 2>/dev/null' EXIT
for _ in $(seq 300); do [[ -s "$T/w.port" && -s "$T/slow.port" ]] && break; sleep 0.1; done
WA="--worker=127.0.0.1:$(cat "$T/w.port") --plaintext"
SA="--worker=127.0.0.1:$(cat "$T/slow.port") --plaintext --token=cli-test"

# One JSON schema: the same keys (and, greedy, the same tokens) from the worker and in-process.
$A2SF generate $WA --prompt="Once upon a time" --max_tokens=20 --policy=full --logprobs=2 --json >"$T/a.json" \
  || fail "a2sf generate --json exits $?"
$GEN --model="$F/stories260K-dq.bin" --tokenizer="$F/tok512.bin" --prompt="Once upon a time" --max_tokens=20 \
  --policy=full --logprobs=2 --json >"$T/b.json" || fail "a2sf-generate --json exits $?"
keys() { grep -o '"[a-z_]*":' "$1" | sort -u; }
diff <(keys "$T/a.json") <(keys "$T/b.json") >/dev/null || fail "JSON keys differ: $(diff <(keys "$T/a.json") <(keys "$T/b.json"))"
ids() { grep -o '"ids":\[[0-9,]*\]' "$1"; }
[[ "$(ids "$T/a.json")" == "$(ids "$T/b.json")" ]] || fail "ids differ: $(ids "$T/a.json") vs $(ids "$T/b.json")"
grep -q '"evictions":0,' "$T/a.json" || fail "uint64 zero not printed as a number: $(cat "$T/a.json")"
$A2SF model $WA | grep -q "stories260K-dq.bin" || fail "a2sf model: $($A2SF model $WA 2>&1)"

# --kv_type=f16 holds keys and values in half the bytes, q8_0 in 10 of f32's 32 a row of 8 (a short
# q8_0 block: 2 + 8 bytes) -- held, peak and the full-cache figure alike, over the same 20 tokens.
# a2sf-generate refuses other types and f16/q8_0 on the CUDA engine, a2sf-worker and a2sf-eval other
# types, a2sf-eval's commands other than fidelity and lag f16: exit 2, a message.
for kv in f32 f16 q8_0; do
  $GEN --model="$F/stories260K-dq.bin" --tokenizer="$F/tok512.bin" --prompt="Once upon a time" --max_tokens=20 \
    --ignore_eos --policy=full --kv_type=$kv --json >"$T/$kv.json" || fail "a2sf-generate --kv_type=$kv exits $?"
done
field() { grep -o "\"$2\":[0-9]*" "$1" | cut -d: -f2; }
for k in kv_bytes_held kv_bytes_peak kv_bytes_full_cache; do
  [[ "$(field "$T/f16.json" $k)" -gt 0 && $(( $(field "$T/f16.json" $k) * 2 )) -eq "$(field "$T/f32.json" $k)" ]] \
    || fail "--kv_type=f16 $k: $(field "$T/f16.json" $k), f32: $(field "$T/f32.json" $k)"
  q8=$(field "$T/q8_0.json" $k) f32=$(field "$T/f32.json" $k)
  [[ "$q8" -gt 0 && $(( q8 * 32 )) -eq $(( f32 * 10 )) ]] \
    || fail "--kv_type=q8_0 $k: $(field "$T/q8_0.json" $k), f32: $(field "$T/f32.json" $k)"
done
$GEN --model="$F/stories260K-dq.bin" --tokenizer="$F/tok512.bin" --prompt=x --kv_type=q4_0 2>"$T/kv.err"
[[ $? -eq 2 ]] && grep -q "f32, f16 or q8_0" "$T/kv.err" || fail "a2sf-generate --kv_type=q4_0: $(cat "$T/kv.err")"
for kv in f16 q8_0; do
  $GEN --model="$F/stories260K-dq.bin" --tokenizer="$F/tok512.bin" --prompt=x --kv_type=$kv --device=cuda 2>"$T/kv.err"
  [[ $? -eq 2 ]] && grep -q "CUDA engine" "$T/kv.err" \
    || fail "a2sf-generate --kv_type=$kv --device=cuda: $(cat "$T/kv.err")"
done
$EVAL fidelity --model="$F/stories260K-dq.bin" --kv_type=F16 2>"$T/kv.err"
[[ $? -eq 2 ]] && grep -q "f32, f16 or q8_0" "$T/kv.err" || fail "a2sf-eval --kv_type=F16: $(cat "$T/kv.err")"
$EVAL calibrate --model="$F/stories260K-dq.bin" --kv_type=f16 2>"$T/kv.err"
[[ $? -eq 2 ]] && grep -q "only fidelity and lag" "$T/kv.err" || fail "a2sf-eval calibrate --kv_type=f16: $(cat "$T/kv.err")"
for kv in f16 q8_0; do
  mkdir -p "$T/fid_$kv"
  $EVAL fidelity --model="$F/stories260K-dq.bin" --corpus="$F/corpus_t1_p09_seeds1-20.jsonl" --stories=1-2 \
    --ratios=0.5 --kv_type=$kv --out_dir="$T/fid_$kv" >"$T/fid_$kv.out" 2>&1 \
    || fail "a2sf-eval fidelity --kv_type=$kv exits $?"
  grep -q "KV cache held as $kv: top-1 agreement" "$T/fid_$kv/fidelity.md" \
    || fail "fidelity --kv_type=$kv report: $(head -3 "$T/fid_$kv/fidelity.md")"
done
mkdir -p "$T/fid16"
$EVAL lag --model="$F/stories260K-dq.bin" --corpus="$F/corpus_t1_p09_seeds1-20.jsonl" --stories=1-1 --lags=0,2 \
  --kv_type=f16 --out_dir="$T/fid16" >"$T/lag16.out" 2>&1 || fail "a2sf-eval lag --kv_type=f16 exits $?"
grep -q "f16 KV caches" "$T/fid16/lag.md" || fail "lag --kv_type=f16 report: $(head -1 "$T/fid16/lag.md")"
timeout 60 $WORKER --model="$F/stories260K-dq.bin" --tokenizer="$F/tok512.bin" --kv_type=bf16 --listen=127.0.0.1:0 \
  --plaintext 2>"$T/kv.err"
[[ $? -eq 2 ]] && grep -q "f32, f16 or q8_0" "$T/kv.err" || fail "a2sf-worker --kv_type=bf16: $(cat "$T/kv.err")"
# The worker checks --device and --kv_type before loading the model (no "model:" line), on any machine.
for bad in "--device=tpu" "--kv_type=f16 --device=cuda"; do
  timeout 60 $WORKER --model="$F/stories260K-dq.bin" --tokenizer="$F/tok512.bin" $bad --listen=127.0.0.1:0 \
    --plaintext 2>"$T/kv.err"
  [[ $? -eq 2 ]] && ! grep -q "model:" "$T/kv.err" && grep -qE "device|CUDA engine" "$T/kv.err" \
    || fail "a2sf-worker $bad: $(cat "$T/kv.err")"
done
# Every other flag too: a bad one exits 2 naming it, before the model's load (a missing file never shows).
for bad in "--max_batch=0" "--threads=0" "--score_dtype=fp8" "--on_cachemgr_failure=retry" "--decision_lag=100000" \
           "--tls_cert=$T/no-such.pem" "--cachemgr_ca=$T/no-such-ca.pem" "--metrics_listen=9090" \
           "--http_listen=127.0.0.1:99999"; do
  timeout 60 $WORKER --model="$T/no-such-model.bin" $bad --listen=127.0.0.1:0 --plaintext 2>"$T/flag.err"
  [[ $? -eq 2 ]] && grep -q -- "${bad%%=*}" "$T/flag.err" && ! grep -q "no-such-model" "$T/flag.err" \
    || fail "a2sf-worker $bad: $(cat "$T/flag.err")"
done
# The f16 worker's job: 4 tokens cached (1 prompt + 4 generated - 1), each 1 layer x 12 heads x 64 x 2 x 2 bytes.
$A2SF generate $SA --prompt_ids=1 --max_tokens=4 --ignore_eos --policy=full --json >"$T/slow16.json" \
  || fail "a2sf generate on the f16 worker exits $?"
for k in kv_bytes_held kv_bytes_full_cache; do
  [[ "$(field "$T/slow16.json" $k)" == 12288 ]] || fail "f16 worker $k: $(field "$T/slow16.json" $k), not 12288"
done
$A2SF model $SA --json | grep -q '"kv_type": *"f16"' || fail "a2sf model on the f16 worker: $($A2SF model $SA --json 2>&1)"
$A2SF model $SA | grep -q "KV cache f16" || fail "a2sf model on the f16 worker: $($A2SF model $SA 2>&1)"
$A2SF model $WA | grep -q "KV cache f32" || fail "a2sf model on the f32 worker: $($A2SF model $WA 2>&1)"

# policy set --job swaps the running job's session; cancelling the job exits 4.
$A2SF generate $SA --prompt_ids=1 --max_tokens=0 --ignore_eos --policy=h2o --budget_tokens=64 --job_id=long \
  >"$T/long.out" 2>"$T/long.err" &
G=$!
for _ in $(seq 100); do $A2SF jobs $SA 2>/dev/null | grep -q '"JOB_STATE_RUNNING"' && break; sleep 0.1; done
$A2SF policy set --cachemgr=127.0.0.1:$(cat "$T/cm.port") --plaintext $SA --job=long --policy=a2sf --alpha=0.5 \
  >"$T/swap.out" 2>&1 || fail "policy set --job: $(cat "$T/swap.out")"
grep -q '"h2o"' "$T/swap.out" || fail "policy set --job did not swap h2o: $(cat "$T/swap.out")"
$A2SF cancel long $SA | grep -q cancelled || fail "cancel"
wait $G; rc=$?
[[ $rc == 4 ]] || fail "a cancelled job exits $rc, not 4"
grep -q "CANCELLED" "$T/long.out" || fail "no finish reason in: $(tail -3 "$T/long.out")"

# --timeout_s bounds a job (no deadline by default: a long CPU generation must not be cut at 10 minutes).
start=$(date +%s)
$A2SF generate $SA --prompt_ids=1 --max_tokens=0 --ignore_eos --policy=full --timeout_s=1 >"$T/to.out" 2>"$T/to.err"
rc=$?
[[ $rc != 0 ]] && grep -q DEADLINE_EXCEEDED "$T/to.err" || fail "--timeout_s=1: exit $rc, $(cat "$T/to.err")"
(( $(date +%s) - start < 30 )) || fail "--timeout_s=1 took $(( $(date +%s) - start )) s"

# generate --repeat/--concurrency through a worker that decodes one job at a time: the others queue
# (FIFO), every job still succeeds, and the per-job lines show the queue at work.
$WORKER --model="$F/stories260K-dq.bin" --tokenizer="$F/tok512.bin" --listen=127.0.0.1:0 --plaintext \
  --max_batch=1 --max_waiting=8 --port_file="$T/q.port" 2>"$T/q.log" &
Q=$!
trap 'kill $CM $W $SLOW $Q 2>/dev/null' EXIT
for _ in $(seq 300); do [[ -s "$T/q.port" ]] && break; sleep 0.1; done
$A2SF generate --worker=127.0.0.1:$(cat "$T/q.port") --plaintext --prompt_ids=1 --max_tokens=400 --ignore_eos \
  --repeat=6 --concurrency=3 >"$T/q.out" 2>&1 || fail "generate --repeat=6 --concurrency=3 exits $?: $(tail -3 "$T/q.out")"
[[ $(grep -c ": ok on " "$T/q.out") == 6 ]] || fail "not 6 jobs ok: $(cat "$T/q.out")"
grep -q "^summary: 6 jobs; [^ ]*=6$" "$T/q.out" || fail "summary: $(tail -1 "$T/q.out")"
# Three clients at once against one place: at least one job waited, and one stood behind another.
grep -Eq "waited [0-9]*[1-9][0-9.]* ms|waited 0\.[0-9]*[1-9]" "$T/q.out" || fail "no job waited: $(cat "$T/q.out")"
grep -q "queue position [1-9]" "$T/q.out" || fail "no job queued behind another: $(cat "$T/q.out")"

[[ $failures == 0 ]] && echo PASS
exit $((failures > 0))
