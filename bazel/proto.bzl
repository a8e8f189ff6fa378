"""C++ and gRPC code generation with the system protoc (Bazel's proto rules would download protobuf)."""

load("@rules_cc//cc:defs.bzl", "cc_library")

PROTOC = "/usr/bin/protoc"
GRPC_PLUGIN = "/usr/bin/grpc_cpp_plugin"

def grpc_cc_proto_library(name, srcs, deps = [], services = True, visibility = None):
    """Generates message (and, with services, gRPC stub) code for `srcs` into one cc_library.

    Proto files are imported relative to the package folder, e.g. package //proto holding
    a2sf/v1/policy.proto is imported as "a2sf/v1/policy.proto" and its header included as
    "a2sf/v1/policy.pb.h". `deps` are other grpc_cc_proto_library targets of the same package.
    """
    pkg = native.package_name()
    outs = []
    for src in srcs:
        stem = src[:-len(".proto")]
        outs += [stem + ".pb.h", stem + ".pb.cc"]
        if services:
            outs += [stem + ".grpc.pb.h", stem + ".grpc.pb.cc"]
    dep_protos = [d + "_srcs" for d in deps]
    native.filegroup(name = name + "_srcs", srcs = srcs + dep_protos, visibility = visibility)
    cmd = "{protoc} -I{pkg} --cpp_out=$(GENDIR)/{pkg}".format(protoc = PROTOC, pkg = pkg)
    if services:
        cmd += " --grpc_out=$(GENDIR)/{pkg} --plugin=protoc-gen-grpc={plugin}".format(
            pkg = pkg,
            plugin = GRPC_PLUGIN,
        )
    cmd += " " + " ".join(["{}/{}".format(pkg, s) for s in srcs])
    native.genrule(
        name = name + "_gen",
        srcs = srcs + dep_protos,
        outs = outs,
        cmd = cmd,
    )
    cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        includes = ["."],
        copts = ["-Wno-unused-parameter"],
        deps = deps + ["@protobuf//:lib"] + (["@grpc//:lib"] if services else []),
        visibility = visibility,
    )
