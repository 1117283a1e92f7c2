#!/usr/bin/env bash
# Builds local systemd base images from Debian's archive (no registry is reachable on our machines):
# debootstrap a minimal root file system, then `docker import` it. An image that exists is reused.
# Usage: docker/build-base-images.sh [bookworm] [trixie] [bullseye]   (default: bookworm trixie)
set -euo pipefail
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PREFIX=${IMAGE_PREFIX:-matrix-provision}
INCLUDE=systemd,systemd-sysv,dbus,openssh-server,sudo,python3,iproute2,ca-certificates,curl,gnupg,procps,less
suites=("$@"); [ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)

build_one() {
  local suite=$1 image="$PREFIX/debian-systemd:$1"
  if docker image inspect "$image" >/dev/null 2>&1; then echo "reuse $image"; return 0; fi
  local rootfs; rootfs=$(mktemp -d "/var/tmp/rootfs-$suite.XXXXXX")
  echo "debootstrap $suite -> $image"
  debootstrap --variant=minbase --include="$INCLUDE" "$suite" "$rootfs" "$MIRROR" >"/var/tmp/debootstrap-$suite.log" 2>&1 \
    || { echo "debootstrap $suite failed; see /var/tmp/debootstrap-$suite.log" >&2; tail -20 "/var/tmp/debootstrap-$suite.log" >&2; rm -rf "$rootfs"; return 1; }
  # Keep apt lean in the image and let containers reach the same mirror the builder used.
  echo "deb $MIRROR $suite main" > "$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
  rm -rf "$rootfs"
  echo "built $image"
}
pids=()
for s in "${suites[@]}"; do build_one "$s" & pids+=($!); done
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
