#!/usr/bin/env bash
# Fuzzes the model loaders (llama2.c, GGUF with its tokenizer, safetensors) with libFuzzer (clang, AddressSanitizer, UBSan), starting from the kept
# corpus in worker/model/fuzz/corpus, and keeps what it finds there (minimised with -merge=1).
# Usage: scripts/fuzz.sh [seconds, default 60]. Needs clang with libFuzzer (apt-get install clang).
# Crashing inputs are written to /tmp/a2sf-fuzz/crash-*; replay one with: /tmp/a2sf-fuzz/loader_fuzzer FILE
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out=/tmp/a2sf-fuzz
mkdir -p "$out/new"
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (apt-get install clang)" >&2; exit 2; }
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
