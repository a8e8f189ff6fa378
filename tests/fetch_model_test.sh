#!/usr/bin/env bash
# scripts/fetch_model.sh against a local "mirror" (file:// URLs): a file with the pinned hash is
# accepted, one without is refused and deleted. Uses the fixtures' tok512.bin (the published file)
# and their stories260K-dq.bin renamed (a different file from the published fp32 checkpoint).
set -euo pipefail
script="$1"
fixtures="${A2SF_FIXTURES:-}"
if [ -z "$fixtures" ] || [ ! -f "$fixtures/tok512.bin" ]; then echo "SKIPPED: no fixtures"; exit 0; fi
tmp="${TEST_TMPDIR:-/tmp}/fetch"
rm -rf "$tmp"; mkdir -p "$tmp/mirror"
cp "$fixtures/tok512.bin" "$tmp/mirror/tok512.bin"
cp "$fixtures/stories260K-dq.bin" "$tmp/mirror/stories260K.bin"
if A2SF_MODEL_BASE_URL="file://$tmp/mirror" bash "$script" "$tmp/dest" 2>"$tmp/err"; then
  echo "FAIL: a checkpoint with the wrong sha256 was accepted"; exit 1
fi
grep -q "expected b0a507e7" "$tmp/err" || { echo "FAIL: no hash message"; cat "$tmp/err"; exit 1; }
[ ! -e "$tmp/dest/stories260K.bin" ] && [ ! -e "$tmp/dest/stories260K.bin.part" ] || { echo "FAIL: bad file kept"; exit 1; }
# The accepting path, with a copy of the script that fetches only the tokenizer (whose published file
# the fixtures hold).
sed 's/for file in stories260K.bin tok512.bin/for file in tok512.bin/' "$script" > "$tmp/fetch_tok_only.sh"
out="$(A2SF_MODEL_BASE_URL="file://$tmp/mirror" bash "$tmp/fetch_tok_only.sh" "$tmp/dest")"
[ "$out" = "$tmp/dest" ] && [ -f "$tmp/dest/tok512.bin" ] || { echo "FAIL: the good tokenizer was not accepted"; exit 1; }
# A second run finds it in place and downloads nothing.
rm -rf "$tmp/mirror"
A2SF_MODEL_BASE_URL="file://$tmp/mirror" bash "$tmp/fetch_tok_only.sh" "$tmp/dest" >/dev/null
# No source at all: a clear failure.
rm -rf "$tmp/dest"
if A2SF_MODEL_BASE_URL="file://$tmp/nowhere" bash "$script" "$tmp/dest" 2>"$tmp/err"; then echo "FAIL"; exit 1; fi
grep -q "could not download" "$tmp/err" || { echo "FAIL: no download message"; exit 1; }
echo "fetch_model checks passed"
