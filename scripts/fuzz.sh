#!/usr/bin/env bash
# Fuzzes with libFuzzer (clang, AddressSanitizer, UBSan), starting from the kept corpora, and keeps what
# it finds there (minimised with -merge=1):
#   loader    the model loaders incl. GGUF   corpus worker/model/fuzz/corpus
#   service   the cache manager's requests   corpus cachemgr/service/fuzz/corpus (OpenSession, steps,
#             ring slots, get/close/swap/list, driven in-process through the service classes)
#   generate  the worker's Generate handling corpus worker/service/fuzz/corpus (needs A2SF_FIXTURES,
#             default ../shared/fixtures)
# Each is a Bazel target (tag manual) built here with clang and the sanitizers in an output base of its
# own (/tmp/a2sf-fuzz/bazel): the first run builds the dependencies once, later runs reuse them.
# Usage: scripts/fuzz.sh [seconds per target, default 60] [loader|service|generate|all, default all].
# Needs clang with libFuzzer (apt-get install clang). Crashing inputs are written to
# /tmp/a2sf-fuzz/crash-*; replay one with: /tmp/a2sf-fuzz/<target>_fuzzer FILE
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
which_targets="${2:-all}"
out=/tmp/a2sf-fuzz
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (apt-get install clang)" >&2; exit 2; }
export A2SF_FIXTURES="${A2SF_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
mkdir -p "$out"

# Fuzzes `name` from `corpus` into a scratch folder, then merges what adds coverage into the corpus.
run() {
  local name=$1 corpus=$2 max_len=$3
  mkdir -p "$out/new-$name"
  "$out/${name}_fuzzer" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -artifact_prefix="$out/" \
    -print_final_stats=1 "$out/new-$name" "$corpus"
  "$out/${name}_fuzzer" -merge=1 -max_len="$max_len" "$corpus" "$out/new-$name"
  echo "fuzz: $corpus now holds $(ls "$corpus" | wc -l) inputs"
}

# name, Bazel target, corpus, longest input.
fuzzers=(
  "loader //worker/model:loader_fuzzer worker/model/fuzz/corpus 16384"
  "service //cachemgr/service/fuzz:service_fuzzer cachemgr/service/fuzz/corpus 4096"
  "generate //worker/service/fuzz:generate_fuzzer worker/service/fuzz/corpus 4096"
)
chosen=()
for f in "${fuzzers[@]}"; do
  read -r name _ _ _ <<<"$f"
  if [[ $which_targets == all || $which_targets == "$name" ]]; then chosen+=("$f"); fi
done
[[ ${#chosen[@]} -gt 0 ]] || { echo "fuzz: unknown target '$which_targets' (loader, service, generate, all)" >&2; exit 2; }

# Every fuzzer is built by Bazel (its deps as the tests build them), with clang in an output base of
# its own so the workspace's gcc build is not disturbed.
bazel_fuzz() { bazel --output_base="$out/bazel" "$@"; }
targets=()
for f in "${chosen[@]}"; do read -r _ target _ _ <<<"$f"; targets+=("$target"); done
CC=clang CXX=clang++ bazel_fuzz build -c opt \
  --repo_env=A2SF_DISABLE_CUDA=1 --repo_env=A2SF_CUDA_PATH=/usr/local/cuda \
  --copt=-O1 --copt=-g --copt=-fsanitize=address,undefined,fuzzer-no-link --copt=-fno-sanitize-recover=undefined \
  --linkopt=-fsanitize=address,undefined,fuzzer --linkopt=-fsanitize-link-c++-runtime \
  "${targets[@]}"
bin="$(bazel_fuzz info -c opt bazel-bin 2>/dev/null)"
for f in "${chosen[@]}"; do
  read -r name target corpus max_len <<<"$f"
  path="${target#//}"
  cp -f "$bin/${path%%:*}/${path##*:}" "$out/${name}_fuzzer"
  run "$name" "$corpus" "$max_len"
done
