#!/usr/bin/env bash
# Builds the CPU images from this checkout with podman (docker works the same with the same files):
# a2sf/cachemgr, a2sf/worker, a2sf/client and a2sf/model-fetcher (the initContainer), tagged with
# the version the manifests pin. They share deploy/docker/Dockerfile's builder stage, so only the
# first build compiles. Prints each image's size at the end.
#   scripts/build_images.sh [TAG]        (default: the tag in deploy/k8s/base/kustomization.yaml)
# Set CONTAINER_ENGINE=docker to use docker instead (with BuildKit).
set -euo pipefail
cd "$(dirname "$0")/.."
engine="${CONTAINER_ENGINE:-podman}"
tag="${1:-$(sed -n 's/^ *newTag: "\(.*\)"/\1/p' deploy/k8s/base/kustomization.yaml | head -n 1)}"
[ "$engine" != podman ] || bash scripts/container_setup.sh
network=()
[ "$engine" != podman ] || network=(--network host)   # Debian's archive, reached from the builder
for image in cachemgr worker client model-fetcher; do
  echo "build_images: a2sf/$image:$tag"
  start=$SECONDS
  "$engine" build "${network[@]}" -f deploy/docker/Dockerfile --target "$image" -t "a2sf/$image:$tag" .
  echo "build_images: a2sf/$image:$tag built in $((SECONDS - start)) s"
done
# Each image: the non-root user, no build tools, every shared library found, a read-only root.
for image in cachemgr worker client model-fetcher; do
  ref="a2sf/$image:$tag"
  user="$("$engine" image inspect --format '{{.Config.User}}' "$ref")"
  [ "$user" = "10001:10001" ] || { echo "build_images: $ref runs as '$user', not 10001:10001"; exit 1; }
  "$engine" run --rm --read-only --network none --entrypoint /bin/sh "$ref" -c '
    for tool in bazel cc gcc g++ c++ javac nvcc; do
      if command -v "$tool" >/dev/null; then echo "holds $tool"; exit 1; fi
    done
    if ls /opt/a2sf/bin/a2sf* >/dev/null 2>&1 && ldd /opt/a2sf/bin/a2sf* | grep "not found"; then exit 1; fi
    touch /probe 2>/dev/null && { echo "root file system writable"; exit 1; }
    exit 0' || { echo "build_images: $ref failed its checks"; exit 1; }
done
echo "build_images: every image runs as 10001:10001, holds no build tools, finds its libraries, starts read-only"
"$engine" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "a2sf/(cachemgr|worker|client|model-fetcher):$tag " || true
