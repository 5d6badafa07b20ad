#!/usr/bin/env bash
# The host packages forkd needs on Debian/Ubuntu, installed when missing (sudo when not root).
# Used by `forkd install-deps`, scripts/setup.sh and the GitHub Action. Extra package names given
# as arguments are installed too (setup adds what the tests need).
set -euo pipefail

packages=(
  qemu-system-x86             # the VMM
  busybox-static cpio         # guest userland, initramfs tooling
  linux-source-6.1            # the guest kernel is built from the distribution's source
  make gcc libc6-dev flex bison bc libelf-dev lz4 xz-utils
  util-linux procps           # setpriv (QEMU dies with its parent), ps (leak checks)
  mmdebstrap uidmap e2fsprogs # recipe root filesystems: mmdebstrap in a user namespace, mke2fs -d
  zstd tar                    # packs are .tar.zst: the tests read them with the standard tools too
  "$@"                        # extra packages named by the caller
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
  echo "forkd: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "forkd: host packages already installed"
fi
