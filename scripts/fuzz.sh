#!/usr/bin/env bash
# Fuzzes with libFuzzer (clang, AddressSanitizer, UBSan), starting from a kept corpus and keeping what
# it finds there (minimised with -merge=1). Needs clang with libFuzzer (apt-get install clang).
#   scripts/fuzz.sh [seconds]            the model loaders incl. GGUF (worker/model/fuzz/corpus)
#   scripts/fuzz.sh generate [seconds]   the worker's Generate handling (worker/service/fuzz/corpus);
#                                        built by Bazel with clang in its own output base, needs
#                                        A2SF_FIXTURES (default ../shared/fixtures) for the tokenizer
# Crashing inputs are written to /tmp/a2sf-fuzz/crash-*; replay one with the fuzzer binary and the FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
out=/tmp/a2sf-fuzz
mkdir -p "$out/new"
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (apt-get install clang)" >&2; exit 2; }
if [ "${1:-}" = generate ]; then
  seconds="${2:-60}"
  export A2SF_FIXTURES="${A2SF_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
  mkdir -p "$out/generate-new"
  # A separate output base: the clang build does not disturb the workspace's own (gcc) one.
  # Values given outright: .bazelrc's pass-through --repo_env of unset variables crashes a fresh server.
  CC=clang CXX=clang++ bazel --output_base="$out/bazel" build -c opt \
    --repo_env=A2SF_DISABLE_CUDA=1 --repo_env=A2SF_CUDA_PATH=/usr/local/cuda \
    --copt=-O1 --copt=-g --copt=-fsanitize=address,undefined,fuzzer-no-link --copt=-fno-sanitize-recover=undefined \
    --linkopt=-fsanitize=address,undefined,fuzzer --linkopt=-fsanitize-link-c++-runtime \
    //worker/service/fuzz:generate_fuzzer
  fuzzer="$out/generate_fuzzer"
  cp -f "$(bazel --output_base="$out/bazel" info -c opt bazel-bin 2>/dev/null)/worker/service/fuzz/generate_fuzzer" "$fuzzer"
  "$fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=30 -rss_limit_mb=4096 -artifact_prefix="$out/" \
    "$out/generate-new" worker/service/fuzz/corpus
  "$fuzzer" -merge=1 -max_len=4096 worker/service/fuzz/corpus "$out/generate-new"
  echo "fuzz: corpus now holds $(ls worker/service/fuzz/corpus | wc -l) inputs"
  exit 0
fi
seconds="${1:-60}"
absl_libs=$(pkg-config --libs absl_status absl_statusor absl_strings absl_str_format absl_time absl_synchronization)
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
  worker/model/fuzz/libfuzzer_main.cc worker/model/fuzz/loader_fuzz_target.cc worker/model/model_loader.cc \
  worker/model/synthetic_model.cc worker/model/weights.cc worker/model/gguf.cc worker/model/gguf_model.cc \
  worker/model/model_writers.cc worker/tokenizer/gguf_vocabulary.cc worker/tokenizer/vocabulary_tokenizer.cc worker/tokenizer/sentencepiece_tokenizer.cc worker/tokenizer/sentencepiece_model.cc worker/tokenizer/utf8.cc common/files.cc common/float16.cc common/mapped_file.cc \
  $(pkg-config --cflags absl_status) $absl_libs -lsentencepiece -lsentencepiece_train -o "$out/loader_fuzzer"
# Fuzz into a scratch folder, then merge whatever adds coverage back into the kept corpus.
"$out/loader_fuzzer" -max_total_time="$seconds" -max_len=16384 -timeout=10 -artifact_prefix="$out/" \
  "$out/new" worker/model/fuzz/corpus
"$out/loader_fuzzer" -merge=1 -max_len=16384 worker/model/fuzz/corpus "$out/new"
echo "fuzz: corpus now holds $(ls worker/model/fuzz/corpus | wc -l) inputs"
