#!/usr/bin/env bash
# Makes this Debian 12 machine able to build the images (deploy/docker) and play the manifests
# (scripts/k8s_rehearsal.sh) with podman, with no registry but Debian's:
#   - installs Debian's podman, runc, debootstrap and catatonit;
#   - writes /etc/containers/containers.conf: runc as the runtime, cgroupfs as the cgroup manager
#     (no systemd here) and explicit ulimits (the defaults ask for more than these machines allow);
#   - builds the base image debian:12 (tagged debian:12-slim too) from Debian's own archive with
#     `debootstrap --variant=minbase bookworm` and `podman import`, instead of pulling it.
# Idempotent: what is already in place is left alone, so a second run takes a second.
#   scripts/container_setup.sh
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# catatonit: the init of the pause container that `podman kube play` builds for every pod.
PACKAGES=(podman runc debootstrap catatonit)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "container_setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

conf=/etc/containers/containers.conf
wanted='# Written by scripts/container_setup.sh (A2SF-Serve).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
'
if [ "$(cat "$conf" 2>/dev/null)" != "$(printf '%s' "$wanted")" ]; then
  echo "container_setup: writing $conf"
  $SUDO mkdir -p /etc/containers
  printf '%s' "$wanted" | $SUDO tee "$conf" >/dev/null
fi

if ! $SUDO podman image exists docker.io/library/debian:12; then
  mirror="${A2SF_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  root="$(mktemp -d /var/tmp/a2sf-debootstrap.XXXXXX)"
  trap '$SUDO rm -rf "$root"' EXIT
  echo "container_setup: debootstrap --variant=minbase bookworm from $mirror (a few minutes)"
  $SUDO debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log"; exit 1; }
  rm -f "$root.log"
  # The same trims as the official slim image: no apt lists, no caches.
  $SUDO rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  $SUDO tar -C "$root" -c . | $SUDO podman import \
    --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - docker.io/library/debian:12 >/dev/null
fi
if ! $SUDO podman image exists docker.io/library/debian:12-slim; then
  $SUDO podman tag docker.io/library/debian:12 docker.io/library/debian:12-slim
fi
echo "container_setup: podman $($SUDO podman version --format '{{.Client.Version}}'), base image debian:12 ready"
