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
# The accepting path: the published tokenizer (pinned sum) and, named through the overrides the
# Kubernetes initContainer uses, another model file with its own sum.
cp "$fixtures/stories260K-dq.bin" "$tmp/mirror/stories260K-dq.bin"
export A2SF_MODEL_FILE=stories260K-dq.bin
A2SF_MODEL_SHA256="$(sha256sum "$fixtures/stories260K-dq.bin" | cut -d' ' -f1)"
export A2SF_MODEL_SHA256
out="$(A2SF_MODEL_BASE_URL="file://$tmp/mirror" bash "$script" "$tmp/dest")"
[ "$out" = "$tmp/dest" ] && [ -f "$tmp/dest/tok512.bin" ] && [ -f "$tmp/dest/stories260K-dq.bin" ] \
  || { echo "FAIL: the good files were not accepted"; exit 1; }
# A second run finds both in place and downloads nothing (the mirror is gone).
rm -rf "$tmp/mirror"
A2SF_MODEL_BASE_URL="file://$tmp/mirror" bash "$script" "$tmp/dest" >/dev/null 2>"$tmp/err" \
  || { echo "FAIL: files in place were fetched again"; cat "$tmp/err"; exit 1; }
[ "$(grep -c "skipped" "$tmp/err")" -eq 2 ] || { echo "FAIL: no skip message"; cat "$tmp/err"; exit 1; }
unset A2SF_MODEL_FILE A2SF_MODEL_SHA256
# No source at all: a clear failure.
rm -rf "$tmp/dest"
if A2SF_MODEL_BASE_URL="file://$tmp/nowhere" bash "$script" "$tmp/dest" 2>"$tmp/err"; then echo "FAIL"; exit 1; fi
grep -q "could not download" "$tmp/err" || { echo "FAIL: no download message"; exit 1; }
echo "fetch_model checks passed"
