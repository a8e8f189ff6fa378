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
"$engine" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "a2sf/(cachemgr|worker|client|model-fetcher):$tag " || true
