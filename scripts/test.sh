#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything offline and runs every test.
# Tests that need the stories260K fixtures read them from $A2SF_FIXTURES (default ../shared/fixtures
# beside the checkout) and skip with a message when they are absent; GPU tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/npm_install.sh

if [ -z "${A2SF_FIXTURES:-}" ] && [ -d ../shared/fixtures ]; then
  A2SF_FIXTURES="$(cd ../shared/fixtures && pwd)"
fi
export A2SF_FIXTURES="${A2SF_FIXTURES:-}"
echo "test: fixtures at ${A2SF_FIXTURES:-<none: fixture tests will skip>}"
# The deploy test validates the manifests against the Kubernetes API schema with this (npm, pinned).
A2SF_K8S_SCHEMA_MODULES="$(bash scripts/install_schema_validator.sh)"
export A2SF_K8S_SCHEMA_MODULES

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
# The openai npm client for //tests:openai_client_test; A2SF_REQUIRE_NODE makes its absence a failure here.
bazel test //... --test_env=A2SF_NODE_MODULES="$PWD/tests/openai_client/node_modules" --test_env=A2SF_REQUIRE_NODE=1 \
    "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log" || true)
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE)' "$log" || true)
echo "tests: ${passed} passed, ${failed} failed"
exit "$rc"
