#!/usr/bin/env bash
# Downloads a model and its tokenizer and checks both against pinned sha256 sums; a file that does
# not match is deleted and the script fails; a file already there with the right sum is skipped.
# By default: stories260K (karpathy/tinyllamas, MIT) and tok512.bin. Prints the destination folder.
#   scripts/fetch_model.sh [DEST]      (default: $A2SF_MODEL_DIR or ~/.cache/a2sf/stories260K)
# A2SF_MODEL_BASE_URL overrides the source (a mirror, or file:///path for offline copies);
# A2SF_MODEL_FILE + A2SF_MODEL_SHA256 and A2SF_TOKENIZER_FILE + A2SF_TOKENIZER_SHA256 name other
# files and their sums (the Kubernetes initContainer takes all of these from deploy/k8s/base/model.env).
set -euo pipefail
dest="${1:-${A2SF_MODEL_DIR:-$HOME/.cache/a2sf/stories260K}}"
base="${A2SF_MODEL_BASE_URL:-https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K}"
# The original fp32 checkpoint and the 512-token tokenizer as published in karpathy/tinyllamas.
model="${A2SF_MODEL_FILE:-stories260K.bin}"
tokenizer="${A2SF_TOKENIZER_FILE:-tok512.bin}"
declare -A sha256=(
  [$model]="${A2SF_MODEL_SHA256:-b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696}"
  [$tokenizer]="${A2SF_TOKENIZER_SHA256:-037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312}"
)
mkdir -p "$dest"
for file in "$model" "$tokenizer"; do
  target="$dest/$file"
  if [ -f "$target" ] && echo "${sha256[$file]}  $target" | sha256sum --check --status; then
    echo "fetch_model: $file present with the pinned sha256; skipped" >&2
    continue
  fi
  echo "fetch_model: downloading $base/$file" >&2
  if ! curl --fail --location --silent --show-error --retry 2 --connect-timeout 15 -o "$target.part" "$base/$file"; then
    rm -f "$target.part"
    echo "fetch_model: could not download $file from $base (no network?)" >&2
    exit 1
  fi
  if ! echo "${sha256[$file]}  $target.part" | sha256sum --check --status; then
    echo "fetch_model: $file has sha256 $(sha256sum "$target.part" | cut -d' ' -f1), expected ${sha256[$file]}; deleted" >&2
    rm -f "$target.part"
    exit 1
  fi
  mv "$target.part" "$target"
done
echo "$dest"
