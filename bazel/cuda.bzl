"""cuda_library: compiles .cu files with the local nvcc, or a CPU stub when there is no CUDA toolkit."""

load("@local_cuda//:defs.bzl", "CUDA_AVAILABLE", "NVCC")
load("@rules_cc//cc:defs.bzl", "cc_library")

# Ampere (A100) and Hopper (H100/H200) machine code, plus PTX so newer GPUs can JIT it.
CUDA_ARCH_FLAGS = (
    "-gencode arch=compute_80,code=sm_80 " +
    "-gencode arch=compute_90,code=sm_90 " +
    "-gencode arch=compute_90,code=compute_90"
)

def cuda_library(name, cu_srcs, hdrs = [], stub_srcs = [], deps = [], cuda_deps = [], cu_hdrs = [], visibility = None):
    """A cc_library whose implementation is `cu_srcs` built by nvcc when CUDA exists.

    Without a CUDA toolkit the library is built from `stub_srcs` instead (which must define the same
    functions and report that CUDA is unavailable), so the rest of the build never depends on CUDA.
    `cu_hdrs`: headers from other packages that the .cu files include (the package's own are found).
    """
    if not CUDA_AVAILABLE:
        cc_library(name = name, srcs = stub_srcs, hdrs = hdrs, deps = deps, visibility = visibility)
        return
    objs = []
    for src in cu_srcs:
        obj = name + "_" + src.replace("/", "_").replace(".cu", ".o")
        objs.append(obj)
        native.genrule(
            name = obj + "_nvcc",
            srcs = [src] + native.glob(["**/*.h", "**/*.cuh"]) + cu_hdrs,
            outs = [obj],
            cmd = ("{nvcc} -std=c++17 -O3 {arch} -Xcompiler -fPIC -Xcompiler -Wall " +
                   "-I. -I$(GENDIR) -c $(location {src}) -o $@").format(
                nvcc = NVCC,
                arch = CUDA_ARCH_FLAGS,
                src = src,
            ),
        )
    cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cudart"] + cuda_deps,
        visibility = visibility,
        alwayslink = True,
    )
