#!/usr/bin/env bash
# Builds the GPU bundle: everything scripts/gpu_check.sh runs on a GPU machine that has an NVIDIA
# driver and CUDA libraries but no Bazel, no Debian packages and no network.
#   scripts/gpu_bundle.sh DIR                 # bazel build (optimised, nvcc sm_80/sm_90 + PTX), then assemble
#   scripts/gpu_bundle.sh --no-build DIR BIN...  # assemble from binaries already built (the Bazel test)
# DIR gets libexec/ (the binaries), bin/ (a wrapper per binary that puts DIR/lib first on the library
# path, so each runs from DIR on another Linux x86-64 machine), lib/ (every shared library they load
# except the C library, the loader and the CUDA driver/toolkit libraries), fixtures/ (the stories260K
# files the tests read, from $A2SF_FIXTURES) and MANIFEST (commit, CUDA, the CUDA libraries the machine
# must provide). The bundle must stay under 60 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
limit_mib=60
build=yes
if [ "${1:-}" = "--no-build" ]; then build=no; shift; fi
[ $# -ge 1 ] || { echo "usage: $0 [--no-build] DIR [BINARY...]" >&2; exit 2; }
dir="$1"; shift
binaries=("$@")
if [ "$build" = yes ]; then
  cuda="${A2SF_CUDA_PATH:-/usr/local/cuda}"
  if [ ! -x "$cuda/bin/nvcc" ] && [ -z "${A2SF_BUNDLE_WITHOUT_CUDA:-}" ]; then
    echo "gpu_bundle: no nvcc at $cuda/bin (set A2SF_CUDA_PATH; A2SF_BUNDLE_WITHOUT_CUDA=1 bundles the CPU stubs)" >&2
    exit 1
  fi
  # The targets: one list, _GPU_BUNDLE_BINARIES in scripts/BUILD (the CI test bundles the same ones).
  mapfile -t targets < <(sed -n '/^_GPU_BUNDLE_BINARIES = \[/,/^\]/p' scripts/BUILD | grep -o '"//[^"]*"' | tr -d '"')
  bazel build -c opt "${targets[@]}"
  binaries=()
  for t in "${targets[@]}"; do binaries+=("bazel-bin/$(echo "${t#//}" | tr : /)"); done
fi
[ "${#binaries[@]}" -gt 0 ] || { echo "gpu_bundle: no binaries given" >&2; exit 2; }

rm -rf "$dir"
mkdir -p "$dir"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
bash scripts/bundle_runtime.sh --no-cuda-toolkit "$stage" "${binaries[@]}"
mv "$stage/bin" "$dir/libexec"
mv "$stage/lib" "$dir/lib"
mkdir -p "$dir/bin"
for real in "$dir"/libexec/*; do
  name="$(basename "$real")"
  cat > "$dir/bin/$name" <<WRAPPER
#!/bin/sh
# Runs libexec/$name with the bundle's libraries first (then \$LD_LIBRARY_PATH: the CUDA libraries).
here="\$(cd "\$(dirname "\$0")/.." && pwd)"
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/libexec/$name" "\$@"
WRAPPER
  chmod +x "$dir/bin/$name"
done

fixtures="${A2SF_FIXTURES:-../shared/fixtures}"
mkdir -p "$dir/fixtures"
for f in stories260K-dq.bin stories260K_q80.bin stories260K-hf tok512.bin golden_logits16.f32 golden_greedy.json; do
  if [ -e "$fixtures/$f" ]; then cp -rL "$fixtures/$f" "$dir/fixtures/"; else echo "gpu_bundle: warning: no $fixtures/$f" >&2; fi
done

# The CUDA libraries the machine must provide: what the binaries link (NEEDED) plus cuBLAS, which the
# engine opens with dlopen under the soname of the toolkit it was built with.
{
  for real in "$dir"/libexec/*; do
    readelf -d "$real" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
  done | grep -E '^lib(cudart|cublas|cublasLt|nccl)\.so' || true
  if grep -q 'libcublas\.so\.' "$dir/libexec/a2sf-worker" 2>/dev/null; then
    major="$(grep -aoE 'libcublas\.so\.[0-9]+' "$dir/libexec/a2sf-worker" | head -n 1 | sed 's/.*\.//')"
    echo "libcublas.so.$major"
    echo "libcublasLt.so.$major"
  fi
} | sort -u > "$dir/cuda_libs.txt"
{
  if commit="$(git rev-parse HEAD 2>/dev/null)"; then
    git diff --quiet HEAD 2>/dev/null || commit+=" (with uncommitted changes)"
  else
    commit="unknown (not a git checkout)"
  fi
  echo "commit: $commit"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(ldd --version | head -n 1)"
  echo "cuda: $(LD_LIBRARY_PATH="$dir/lib" "$dir/bin/cuda_info" 2>&1 | head -n 1 || true)"
  echo "machine provides: $(tr '\n' ' ' < "$dir/cuda_libs.txt")libcuda.so.1 (driver)"
  echo "binaries: $(ls "$dir/libexec" | tr '\n' ' ')"
} > "$dir/MANIFEST"

size_kib="$(du -sk "$dir" | cut -f1)"
echo "gpu_bundle: $dir: $(ls "$dir/libexec" | wc -l) binaries, $(ls "$dir/lib" | wc -l) libraries, $((size_kib / 1024)) MiB"
if [ "$size_kib" -gt $((limit_mib * 1024)) ]; then
  echo "gpu_bundle: FAIL: the bundle is over ${limit_mib} MiB" >&2
  exit 1
fi
