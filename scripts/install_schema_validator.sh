#!/usr/bin/env bash
# Installs the Kubernetes API schema validator the deploy test uses (deploy/schema: the npm package
# kubernetes-models at the versions pinned by deploy/schema/package-lock.json) and prints the
# node_modules folder, which scripts/test.sh hands to the test as A2SF_K8S_SCHEMA_MODULES.
# Installs Debian's nodejs and npm first if node is missing. Idempotent: an install matching the
# lockfile is kept.
set -euo pipefail
cd "$(dirname "$0")/../deploy/schema"
if ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "install_schema_validator: installing nodejs npm" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >&2
fi
# An install is current when it was made from this very lockfile (its sum is kept beside it).
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat node_modules/.a2sf-lock-sha256 2>/dev/null)" != "$lock_sum" ]; then
  echo "install_schema_validator: npm ci in deploy/schema" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$lock_sum" > node_modules/.a2sf-lock-sha256
fi
echo "$PWD/node_modules"
