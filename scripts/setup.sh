#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the local demo need.
# Idempotent: packages already present are skipped, so a second run is quick.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap
  build-essential pkg-config
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev libgrpc-dev
  libabsl-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev
  prometheus-cpp-dev
  libcpp-httplib-dev libssl-dev
  nlohmann-json3-dev
  openssl
  curl
  ca-certificates
  python3
  python3-yaml
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js and npm for the tests that run real npm clients (openai, kubernetes-models): Debian's where
# there is none. A Node.js from elsewhere (e.g. NodeSource's) ships its own npm and conflicts with
# Debian's npm package, so an npm on the PATH is enough.
if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
