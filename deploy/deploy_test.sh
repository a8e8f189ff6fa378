#!/usr/bin/env bash
# Runs deploy_test.py against the repository as Bazel's runfiles lay it out.
set -euo pipefail
root="${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-a2sf_serve}"
exec python3 "$root/deploy/deploy_test.py" "$root"
