"""Repository rules that wrap libraries installed by Debian (scripts/setup.sh) and CUDA.

Nothing here downloads: each rule asks the local machine (pkg-config, /usr/local/cuda) and writes a
small BUILD file whose cc_library carries the link flags. Headers live under /usr/include (or the
CUDA include directory, added as a system include), so they need no declaration.
"""

def _run_pkg_config(ctx, flag, modules):
    result = ctx.execute(["pkg-config", flag] + modules)
    if result.return_code != 0:
        fail("pkg-config %s %s failed (run scripts/setup.sh first): %s" %
             (flag, " ".join(modules), result.stderr))
    return [f for f in result.stdout.strip().split(" ") if f]

def _pkg_config_library_impl(ctx):
    modules = ctx.attr.modules
    cflags = _run_pkg_config(ctx, "--cflags", modules) if modules else []
    libs = _run_pkg_config(ctx, "--libs", modules) if modules else []
    libs = libs + ["-l" + lib for lib in ctx.attr.extra_libs]
    defines = [f[2:] for f in cflags if f.startswith("-D")]
    copts = [f for f in cflags if not f.startswith("-D") and not f.startswith("-I/usr/include")]
    ctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % ctx.name)
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "lib",
    defines = {defines},
    copts = {copts},
    linkopts = {linkopts},
)
""".format(defines = repr(defines), copts = repr(copts), linkopts = repr(libs)))

pkg_config_library = repository_rule(
    implementation = _pkg_config_library_impl,
    attrs = {
        "modules": attr.string_list(doc = "pkg-config module names"),
        "extra_libs": attr.string_list(doc = "libraries without a .pc file, linked as -l<name>"),
    },
    local = True,
    doc = "A cc_library `@<name>//:lib` for system libraries found through pkg-config.",
)

def _local_cuda_impl(ctx):
    root = ctx.os.environ.get("A2SF_CUDA_PATH", "/usr/local/cuda")
    nvcc = ctx.path(root + "/bin/nvcc")
    available = nvcc.exists and ctx.os.environ.get("A2SF_DISABLE_CUDA", "") == ""
    ctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % ctx.name)
    ctx.file("defs.bzl", "\n".join([
        "# Written by //bazel:system_libs.bzl at fetch time.",
        "CUDA_AVAILABLE = %s" % available,
        "CUDA_ROOT = %r" % root,
        "NVCC = %r" % (str(nvcc) if available else ""),
        "",
    ]))
    if not available:
        ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])
exports_files(["defs.bzl"])
# No CUDA toolkit found: these targets are empty and CUDA-backed code falls back to its stub.
cc_library(name = "cudart")
cc_library(name = "cublas")
cc_library(name = "nccl")
""")
        return
    ctx.symlink(root + "/include", "include")
    lib = root + "/lib64"
    rpath = ["-L" + lib, "-Wl,-rpath," + lib]
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])
exports_files(["defs.bzl"])

cc_library(
    name = "headers",
    hdrs = glob(["include/**/*.h", "include/**/*.hpp", "include/**/*.cuh", "include/**/*.inl"]),
    includes = ["include"],
)

cc_library(name = "cudart", deps = [":headers"], linkopts = {rpath} + ["-lcudart"])
cc_library(name = "cublas", deps = [":cudart"], linkopts = {rpath} + ["-lcublas", "-lcublasLt"])
cc_library(name = "nccl", deps = [":cudart"], linkopts = {rpath} + ["-lnccl"])
""".format(rpath = repr(rpath)))

local_cuda = repository_rule(
    implementation = _local_cuda_impl,
    environ = ["A2SF_CUDA_PATH", "A2SF_DISABLE_CUDA"],
    local = True,
    doc = "CUDA toolkit found at $A2SF_CUDA_PATH (default /usr/local/cuda); empty when absent.",
)
