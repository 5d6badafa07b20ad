#!/usr/bin/env bash
# One command from a clean clone to a working forkd: host packages, npm dependencies, the guest
# kernel + base image (cached in the state dir), a doctor report, and the main job (forkd demo) on
# the default image. Runs as root or with sudo on Debian 12 (bookworm); no KVM needed (TCG fallback).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  qemu-system-x86             # the VMM
  busybox-static cpio         # guest userland, initramfs tooling
  linux-source-6.1            # the guest kernel is built from the distribution's source
  make gcc libc6-dev flex bison bc libelf-dev lz4 xz-utils
  util-linux procps           # setpriv (QEMU dies with its parent), ps (leak checks)
  e2fsprogs debootstrap       # recipe root filesystems: debootstrap, then mke2fs -d (no loop mounts)
  zstd tar                    # packs are .tar.zst: the tests read them with the standard tools too
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "setup: npm dependencies"
npm ci --no-audit --no-fund
npm run build --silent

echo "setup: guest kernel and base image (first time: ~5-7 min on 2 cores; cached after)"
node bin/forkd.js build base
node bin/forkd.js doctor || true

echo "setup: main job: cold boot vs snapshot + fork of 8 children (forkd demo)"
node bin/forkd.js demo
