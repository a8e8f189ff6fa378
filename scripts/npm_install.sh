#!/usr/bin/env bash
# Installs the npm packages the tests use, exactly as tests/openai_client/package-lock.json pins them
# (`npm ci`: the lockfile is the source of truth; nothing is resolved anew). Idempotent: skipped when
# node_modules was installed from the current lockfile. scripts/test.sh calls it and hands the folder to Bazel.
set -euo pipefail
cd "$(dirname "$0")/../tests/openai_client"
if [ node_modules/.installed -nt package-lock.json ]; then
  echo "npm: tests/openai_client/node_modules is up to date"
  exit 0
fi
echo "npm: installing tests/openai_client (node $(node --version), npm $(npm --version))"
npm ci --no-audit --no-fund --loglevel=error
touch node_modules/.installed
