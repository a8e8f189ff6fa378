#!/usr/bin/env bash
# Downloads the default model, stories260K (karpathy/tinyllamas, MIT), and its tokenizer, and checks
# both against pinned sha256 sums; a file that does not match is deleted and the script fails.
# Prints the folder holding stories260K.bin and tok512.bin.
#   scripts/fetch_model.sh [DEST]      (default: $A2SF_MODEL_DIR or ~/.cache/a2sf/stories260K)
# A2SF_MODEL_BASE_URL overrides the source (a mirror, or file:///path for offline copies).
set -euo pipefail
dest="${1:-${A2SF_MODEL_DIR:-$HOME/.cache/a2sf/stories260K}}"
base="${A2SF_MODEL_BASE_URL:-https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K}"
# The original fp32 checkpoint and the 512-token tokenizer as published in karpathy/tinyllamas.
declare -A sha256=(
  [stories260K.bin]=b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696
  [tok512.bin]=037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312
)
mkdir -p "$dest"
for file in stories260K.bin tok512.bin; do
  target="$dest/$file"
  if [ -f "$target" ] && echo "${sha256[$file]}  $target" | sha256sum --check --status; then
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
