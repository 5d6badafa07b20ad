#!/usr/bin/env bash
# Runs a command on a host without /dev/kvm, as a runner without hardware virtualisation: in a
# private mount namespace (unshare --mount --propagation private bash without-kvm.sh CMD...),
# /dev is a tmpfs holding every entry of the real /dev except kvm.
set -e
old=$(mktemp -d)
mount --bind /dev "$old"
mount -t tmpfs -o mode=755 forkd-no-kvm /dev
for entry in "$old"/*; do
  name=${entry##*/}
  [ "$name" = kvm ] && continue
  if [ -L "$entry" ]; then cp -a "$entry" /dev/
  elif [ -d "$entry" ]; then mkdir "/dev/$name" && mount --rbind "$entry" "/dev/$name"
  else touch "/dev/$name" && mount --bind "$entry" "/dev/$name"; fi
done
umount -l "$old" && rmdir "$old"
exec "$@"
