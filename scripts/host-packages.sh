#!/usr/bin/env bash
# The host packages forkd needs on Debian/Ubuntu, installed when missing (sudo when not root).
# Used by `forkd install-deps`, scripts/setup.sh and the GitHub Action. Extra package names given
# as arguments are installed too (setup adds what the tests need).
set -euo pipefail

fail() {
  echo "forkd: $*" >&2
  exit 1
}

[ "$(uname -s)/$(uname -m)" = Linux/x86_64 ] ||
  fail "forkd needs an x86_64 Linux host (this is $(uname -s)/$(uname -m)): nothing was installed"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
  fail "forkd installs its host packages with apt-get: use a Debian or Ubuntu host"

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
need_root() {
  [ -z "$sudo" ] || command -v sudo >/dev/null || fail "setup: need root or sudo to install: $*"
}
installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
# Real (not virtual) packages named linux-source-<version>, oldest first: `show` prints only real ones.
linux_sources() {
  local names
  names=$(apt-cache pkgnames linux-source- | grep -E '^linux-source-[0-9][0-9.]*$' || true)
  [ -n "$names" ] || return 0
  # shellcheck disable=SC2086 # one word per package name
  apt-cache --no-all-versions show $names 2>/dev/null | sed -n 's/^Package: //p' | sort -uV
}

# The distribution's own series: what its `linux-source` metapackage depends on (Debian 12: 6.1,
# although bookworm-security also has 6.12; Debian 13: 6.12; Ubuntu 24.04: 6.8.0), else the newest.
distribution_source() {
  local default
  default=$(apt-cache depends linux-source 2>/dev/null | sed -n 's/^ *Depends: \(linux-source-[0-9][0-9.]*\)$/\1/p' | head -n1)
  if [ -n "$default" ]; then echo "$default"; else linux_sources | tail -n1; fi
}

# The guest kernel is built from the distribution's Linux source: one already installed will do
# (no download, the kernel cache stays valid), else the distribution's own series.
linux_source=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 'linux-source-*' 2>/dev/null |
  sed -n 's/^ii  *//p' | grep -E '^linux-source-[0-9][0-9.]*$' | sort -V | tail -n1 || true)
updated=""
if [ -z "$linux_source" ]; then
  linux_source=$(distribution_source)
  if [ -z "$linux_source" ]; then
    need_root "linux-source"
    echo "forkd: reading the package lists (apt-get update)"
    $sudo apt-get update -qq
    updated=1
    linux_source=$(distribution_source)
  fi
  [ -n "$linux_source" ] || fail "no linux-source-<version> package in this host's apt sources"
fi

packages=(
  qemu-system-x86             # the VMM
  busybox-static cpio         # guest userland, initramfs tooling
  "$linux_source"             # the guest kernel is built from the distribution's source
  make gcc libc6-dev flex bison bc libelf-dev lz4 xz-utils bzip2
  util-linux procps           # setpriv (QEMU dies with its parent), ps (leak checks)
  mmdebstrap uidmap e2fsprogs # recipe root filesystems: mmdebstrap in a user namespace, mke2fs -d
  zstd tar                    # packs are .tar.zst: the tests read them with the standard tools too
  "$@"                        # extra packages named by the caller
)
# Recipe images are Debian (bookworm): mmdebstrap checks its archive with Debian's keys, which
# Debian hosts have and Ubuntu hosts lack.
# shellcheck disable=SC1091
if (. /etc/os-release && [ "$ID" != debian ] && [[ " $ID ${ID_LIKE:-} " == *" ubuntu "* ]]); then
  packages+=(debian-archive-keyring)
fi
missing=()
for pkg in "${packages[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root "${missing[*]}"
  echo "forkd: installing ${missing[*]}"
  [ -n "$updated" ] || $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "forkd: host packages already installed"
fi
