#!/usr/bin/env bash
# npm run test:hosts: forkd on a second host, Debian 13 (trixie), from this machine (docs/hosts.md).
# Bootstraps a trixie root (cached by the hash of its inputs), lets scripts/host-packages.sh install
# forkd's packages in it, then runs in a chroot, in private mount and PID namespaces: npm ci,
# forkd build base (the guest kernel from trixie's linux-source), forkd demo, a postgres recipe
# snapshot, test/integration/postgres.test.ts and branch.test.ts. Fails if any phase fails or anything is left.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || {
    echo "test:hosts: needs root (debootstrap, chroot, mounts): run it as root or install sudo" >&2
    exit 1
  }
  exec sudo "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

suite=trixie
mirror=${FORKD_HOSTS_MIRROR:-http://deb.debian.org/debian}
# The root's own Node and npm; everything forkd needs comes from scripts/host-packages.sh.
bootstrap_packages=nodejs,npm,ca-certificates
cache=${FORKD_HOSTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/forkd-hosts}
key=$( (printf '%s\n' root-v1 "$suite" "$mirror" "$bootstrap_packages" && cat "$repo/scripts/host-packages.sh") |
  sha256sum | cut -c1-16)
image=$cache/$suite-$key.tar.zst
logs=$cache/logs
in_root_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
  TERM=dumb NO_COLOR=1 CI=1 FORKD_HOME=/work/forkd-home)

say() { printf '[test:hosts] %s\n' "$*"; }
phase_names=()
phase_times=()
# phase NAME CMD...: runs CMD with its output in $logs/NAME.log; prints the phase's time, or the
# end of its log when it fails.
phase() {
  local name=$1 log="$logs/$1.log" start=$EPOCHREALTIME elapsed
  shift
  say "$name ..."
  if "$@" >"$log" 2>&1; then
    elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    phase_names+=("$name")
    phase_times+=("$elapsed")
    say "$name ok ($elapsed s)"
  else
    elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    tail -n 60 "$log" | sed 's/^/    /' >&2
    say "$name FAILED after $elapsed s (log: $log)" >&2
    exit 1
  fi
}

for tool in mmdebstrap unshare chroot zstd tar git awk; do
  command -v "$tool" >/dev/null || {
    say "missing $tool (apt-get install mmdebstrap util-linux zstd tar git gawk)" >&2
    exit 1
  }
done
mkdir -p "$cache" "$cache/npm"
rm -rf "$logs" && mkdir -p "$logs"
scratch=$(mktemp -d "${FORKD_HOSTS_SCRATCH:-/dev/shm}/forkd-hosts.XXXXXX")
root=$scratch/root

# Processes whose root directory is inside the scratch root: none may outlive the run.
processes_in_root() {
  local dir pid
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [[ "$(readlink "$dir/root" 2>/dev/null)" == "$root"* ]] && echo "$pid"
  done
  return 0
}
mounts_in_scratch() { awk -v s="$scratch" 'index($5, s) == 1 { print $5 }' /proc/self/mountinfo; }
finish() {
  local status=$? left mounts
  left=$(processes_in_root)
  mounts=$(mounts_in_scratch)
  if [ -n "$left" ]; then
    say "left running in the root: $(echo "$left" | tr '\n' ' ')(killed)" >&2
    # shellcheck disable=SC2086 # one word per pid
    kill -9 $left 2>/dev/null || true
    status=1
  fi
  if [ -n "$mounts" ]; then
    say "left mounted (the scratch dir $scratch is kept): $mounts" >&2
    status=1
  else
    rm -rf "$scratch"
  fi
  [ "$status" = 0 ] && say "passed; nothing left running or mounted" || say "FAILED" >&2
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

# in_root CMD...: CMD in the chroot with /proc, /sys, /dev, /dev/pts and a /dev/shm of its own,
# in new mount and PID namespaces: the mounts vanish with it and every process it started dies
# with it; a QEMU still running at the end fails the phase.
in_root() {
  unshare --mount --pid --fork --kill-child --propagation private -- bash -euc '
    root=$1 npm_cache=$2
    shift 2
    mount --bind "$root" "$root" # / is a mount point on a real host (unshare --propagation needs one)
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --bind /dev "$root/dev"
    mount --bind /dev/pts "$root/dev/pts"
    mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
    mount --bind "$npm_cache" "$root/root/.npm"
    chroot "$root" "$@"
    left=$(chroot "$root" pgrep -a qemu-system || true)
    [ -z "$left" ] || { echo "QEMU left running: $left" >&2; exit 1; }
  ' in-root "$root" "$cache/npm" "${in_root_env[@]}" bash -euc "cd /work/forkd && $1"
}

say "Debian 13 ($suite) root: $image; scratch $scratch; logs $logs"
if [ -f "$image" ]; then
  say "root image cached (inputs unchanged): no bootstrap"
else
  # (phase functions chain with &&: set -e does not apply inside an `if`)
  bootstrap() {
    rm -f "$cache/$suite-"*.tar.zst &&
      mmdebstrap --mode=root --variant=minbase --include="$bootstrap_packages" \
        --customize-hook="copy-in $repo/scripts/host-packages.sh /tmp" \
        --customize-hook='chroot "$1" bash /tmp/host-packages.sh' \
        --customize-hook='rm "$1/tmp/host-packages.sh"' \
        "$suite" "$image.tmp.tar.zst" "$mirror" &&
      mv "$image.tmp.tar.zst" "$image"
  }
  phase bootstrap bootstrap
fi

prepare_root() {
  mkdir -p "$root" &&
    tar --zstd -xpf "$image" -C "$root" &&
    mkdir -p "$root/root/.npm" "$root/work/forkd" &&
    # this host's name servers and any CA it added (a TLS-inspecting proxy before the npm registry)
    cp -L /etc/resolv.conf "$root/etc/resolv.conf" &&
    { cp -L /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true; } &&
    chroot "$root" update-ca-certificates &&
    # the checkout as it is, without what it built or installed
    git -C "$repo" ls-files -co --exclude-standard -z | tar -C "$repo" --null -T - -cf - | tar -xf - -C "$root/work/forkd"
}
phase unpack-root prepare_root
phase host-packages in_root '
  start=$(date +%s%N)
  out=$(bash scripts/host-packages.sh)
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "$out"; echo "fast path: $ms ms"
  [ "$out" = "forkd: host packages already installed" ] && [ "$ms" -lt 10000 ]'
phase versions in_root '
  echo "debian $(cat /etc/debian_version)"
  qemu-system-x86_64 --version | head -n1
  echo "node $(node --version), npm $(npm --version)"
  ls /usr/src/linux-source-*.tar.*
  node -e "const [a, b] = process.versions.node.split(\".\").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)"'
phase npm-ci in_root 'npm ci --no-audit --no-fund'
phase build-base in_root 'node bin/forkd.js build base --quiet && sed -n 3p "$FORKD_HOME"/images/kernel/*/config'
phase doctor in_root 'node bin/forkd.js doctor'
phase demo in_root 'node bin/forkd.js demo'
phase postgres-snapshot in_root 'node bin/forkd.js snapshot --tag pg --recipe postgres && node bin/forkd.js images'
phase postgres-test in_root 'npx vitest run test/integration/postgres.test.ts'
# branching drives QEMU's migration the most (unix: URIs, downtime and bandwidth parameters)
phase branch-test in_root 'npx vitest run test/integration/branch.test.ts'

say "versions in the root: $(grep -v '^/usr/src' "$logs/versions.log" | tr '\n' ';' | sed 's/;$//')"
say "guest kernel: $(tail -n1 "$logs/build-base.log")"
for test in postgres branch; do say "$test test: $(grep -E '^Tests: ' "$logs/$test-test.log")"; done
for i in "${!phase_names[@]}"; do printf '[test:hosts]   %-18s %8s s\n' "${phase_names[$i]}" "${phase_times[$i]}"; done
