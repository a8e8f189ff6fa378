#!/usr/bin/env bash
# Copies binaries and every shared library they load (per ldd) into OUT/{bin,lib}, so a minimal
# runtime image needs no -dev packages. Used by the Dockerfiles' builder stages and by
# scripts/gpu_bundle.sh.
#   scripts/bundle_runtime.sh [--no-cuda-toolkit] OUT BINARY...
# The C library (libc, libm, libpthread, libdl, librt, the loader) comes from the base system and the
# CUDA driver from the node; --no-cuda-toolkit also leaves out the CUDA runtime, cuBLAS and NCCL,
# which the machine then provides.
set -euo pipefail
toolkit=keep
if [ "${1:-}" = "--no-cuda-toolkit" ]; then toolkit=skip; shift; fi
out="$1"; shift
mkdir -p "$out/bin" "$out/lib"
for binary in "$@"; do
  cp -L "$binary" "$out/bin/"
  ldd "$binary" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$lib" in
      */libc.so*|*/libm.so*|*/libpthread.so*|*/libdl.so*|*/librt.so*|*/ld-linux*) ;;  # from the base image
      */libcuda.so*) ;;  # the driver comes from the node
      */libcudart.so*|*/libcublas*.so*|*/libnccl.so*)
        [ "$toolkit" = skip ] || cp -Ln "$lib" "$out/lib/" 2>/dev/null || true ;;
      *) cp -Ln "$lib" "$out/lib/" 2>/dev/null || true ;;
    esac
  done
done
