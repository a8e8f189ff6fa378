#!/usr/bin/env bash
# Fuzzes with libFuzzer (clang, AddressSanitizer, UBSan), starting from the kept corpora, and keeps what
# it finds there (minimised with -merge=1):
#   loader    the model loaders incl. GGUF   corpus worker/model/fuzz/corpus
#   service   the cache manager's requests   corpus cachemgr/service/fuzz/corpus (OpenSession, steps,
#             ring slots, get/close/swap/list, driven in-process through the service classes)
#   generate  the worker's Generate handling corpus worker/service/fuzz/corpus (built by Bazel with
#             clang in its own output base; needs A2SF_FIXTURES, default ../shared/fixtures)
# Usage: scripts/fuzz.sh [seconds per target, default 60] [loader|service|generate|all, default all].
# Needs clang with libFuzzer (apt-get install clang). Crashing inputs are written to
# /tmp/a2sf-fuzz/crash-*; replay one with: /tmp/a2sf-fuzz/<target>_fuzzer FILE
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
which_targets="${2:-all}"
out=/tmp/a2sf-fuzz
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (apt-get install clang)" >&2; exit 2; }
flags=(-std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I.)
absl_libs=$(pkg-config --libs absl_status absl_statusor absl_strings absl_str_format absl_time absl_synchronization)

# Fuzzes `name` from `corpus` into a scratch folder, then merges what adds coverage into the corpus.
run() {
  local name=$1 corpus=$2 max_len=$3
  mkdir -p "$out/new-$name"
  "$out/${name}_fuzzer" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -artifact_prefix="$out/" \
    -print_final_stats=1 "$out/new-$name" "$corpus"
  "$out/${name}_fuzzer" -merge=1 -max_len="$max_len" "$corpus" "$out/new-$name"
  echo "fuzz: $corpus now holds $(ls "$corpus" | wc -l) inputs"
}

if [[ $which_targets == all || $which_targets == loader ]]; then
  clang++ "${flags[@]}" \
    worker/model/fuzz/libfuzzer_main.cc worker/model/fuzz/loader_fuzz_target.cc worker/model/model_loader.cc \
    worker/model/synthetic_model.cc worker/model/weights.cc worker/model/gguf.cc worker/model/gguf_model.cc \
    worker/model/model_writers.cc worker/tokenizer/gguf_vocabulary.cc worker/tokenizer/vocabulary_tokenizer.cc \
    worker/tokenizer/sentencepiece_tokenizer.cc worker/tokenizer/sentencepiece_model.cc worker/tokenizer/utf8.cc \
    common/files.cc common/float16.cc common/mapped_file.cc \
    $(pkg-config --cflags absl_status) $absl_libs -lsentencepiece -lsentencepiece_train -o "$out/loader_fuzzer"
  run loader worker/model/fuzz/corpus 16384
fi

if [[ $which_targets == all || $which_targets == service ]]; then
  gen="$out/gen"
  mkdir -p "$gen"
  protoc -Iproto --cpp_out="$gen" --grpc_out="$gen" --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" \
    proto/a2sf/v1/policy.proto proto/a2sf/v1/scores.proto proto/a2sf/v1/cache_manager.proto
  sources=(cachemgr/service/fuzz/libfuzzer_main.cc cachemgr/service/fuzz/service_fuzz_target.cc
    cachemgr/service/cache_manager_service.cc cachemgr/service/proto_convert.cc
    cachemgr/service/device_scores.cc cachemgr/policy_proto.cc
    cachemgr/session/session_manager.cc cachemgr/session/lagged_layout.cc
    $(ls cachemgr/policy/*.cc | grep -v _test) $(ls cachemgr/store/*.cc | grep -v -e _test -e cuda)
    $(ls common/kv/*.cc | grep -v _test) common/grpc/bearer_token.cc common/grpc/status.cc
    common/cuda/ipc.cc common/cuda/ipc_runtime_stub.cc
    common/log.cc common/peer_strings.cc common/thread_pool.cc common/float16.cc common/unix_socket.cc
    common/shm/score_ring.cc common/shm/ring_handoff.cc
    "$gen"/a2sf/v1/*.cc)
  # clang 14 knows no "f16c" feature for __builtin_cpu_supports: the fuzzer takes the scalar paths.
  clang++ "${flags[@]}" -ffp-contract=off -I"$gen" '-D__builtin_cpu_supports(feature)=0' "${sources[@]}" \
    $(pkg-config --cflags --libs grpc++ protobuf prometheus-cpp-core) $absl_libs -lpthread \
    -o "$out/service_fuzzer"
  run service cachemgr/service/fuzz/corpus 4096
fi

if [[ $which_targets == all || $which_targets == generate ]]; then
  export A2SF_FIXTURES="${A2SF_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
  # A separate output base: the clang build does not disturb the workspace's own (gcc) one.
  CC=clang CXX=clang++ bazel --output_base="$out/bazel" build -c opt \
    --repo_env=A2SF_DISABLE_CUDA=1 --repo_env=A2SF_CUDA_PATH=/usr/local/cuda \
    --copt=-O1 --copt=-g --copt=-fsanitize=address,undefined,fuzzer-no-link --copt=-fno-sanitize-recover=undefined \
    --linkopt=-fsanitize=address,undefined,fuzzer --linkopt=-fsanitize-link-c++-runtime \
    //worker/service/fuzz:generate_fuzzer
  cp -f "$(bazel --output_base="$out/bazel" info -c opt bazel-bin 2>/dev/null)/worker/service/fuzz/generate_fuzzer" \
    "$out/generate_fuzzer"
  run generate worker/service/fuzz/corpus 4096
fi
