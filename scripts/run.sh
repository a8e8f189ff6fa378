#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds, and runs the main job with the
# default model (stories260K). Each stage runs if it exists in this checkout and says so if not.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bazel build //... 2>&1 | tail -n 3

echo
echo "== CUDA =="
bazel run //common/cuda:cuda_info 2>/dev/null || true
echo
echo "== Policy library: replaying a score trace =="
bazel-bin/cachemgr/tools/a2sf-replay --trace=cachemgr/tools/testdata/h2o_vs_a2sf.jsonl
echo
echo "== Main job (in-process for now) =="
fixtures="${A2SF_FIXTURES:-../shared/fixtures}"
if [ -f "$fixtures/stories260K-dq.bin" ]; then
  bazel-bin/worker/tools/a2sf-generate --model="$fixtures/stories260K-dq.bin" --tokenizer="$fixtures/tok512.bin" \
    --prompt="Once upon a time" --steps=200 --policy=a2sf --alpha=0.3 --budget_ratio=0.2
else
  echo "The default model (stories260K) was not found at $fixtures; set A2SF_FIXTURES to its folder."
  echo "(The pinned download is not implemented yet.)"
fi
echo
echo "Not there yet: the cache-manager and worker services (issue 7). The story above was generated"
echo "with the policy running in-process, not through the cache manager."
