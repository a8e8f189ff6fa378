#!/usr/bin/env bash
# Copies binaries and every shared library they load (per ldd) into OUT/{bin,lib}, so a minimal
# runtime image needs no -dev packages. Used by the Dockerfiles' builder stages.
#   scripts/bundle_runtime.sh OUT BINARY...
set -euo pipefail
out="$1"; shift
mkdir -p "$out/bin" "$out/lib"
for binary in "$@"; do
  cp -L "$binary" "$out/bin/"
  ldd "$binary" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$lib" in
      */libc.so*|*/libm.so*|*/libpthread.so*|*/libdl.so*|*/librt.so*|*/ld-linux*) ;;  # from the base image
      */libcuda.so*) ;;  # the driver comes from the node
      *) cp -Ln "$lib" "$out/lib/" 2>/dev/null || true ;;
    esac
  done
done
