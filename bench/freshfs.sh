# shellcheck shell=bash
# A fresh ext4 for each timed run, sourced by the benches (needs root).
#
# Unpacking into a filesystem that still reclaims the tree an earlier run
# deleted moves every tool's time by up to 3x (issue 17), so a run gets a
# filesystem made just before it: mkfs on a loop device onto a file
# written once (the host allocates nothing during a run), with direct I/O
# (the loop does not go through the host's page cache a second time).
#
#   freshfs_init DIR MB   the backing file DIR/fs.img of MB MiB, its loop
#                         device, the mount point DIR/mnt (FRESHFS_MNT)
#   freshfs_new           mkfs and mount anew (unmounting the last one)
#   freshfs_drop          sync, then drop the page cache
#   freshfs_done          unmount and detach (for the EXIT trap)
FRESHFS_IMG=
FRESHFS_DEV=
FRESHFS_MNT=

# Engineers share the machine and its loop devices: a device detached
# under us may have been given to someone else's file, which mkfs would
# wipe. Whether FRESHFS_DEV still backs our file:
freshfs_ours() {
  [ -n "$FRESHFS_DEV" ] &&
    [ "$(cat "/sys/block/${FRESHFS_DEV#/dev/}/loop/backing_file" 2>/dev/null)" = "$(realpath "$FRESHFS_IMG")" ]
}

freshfs_init() {
  FRESHFS_IMG=$1/fs.img
  FRESHFS_MNT=$1/mnt
  dd if=/dev/zero of="$FRESHFS_IMG" bs=16M count=$(( ($2 + 15) / 16 )) conv=fsync status=none
  FRESHFS_DEV=$(losetup --direct-io=on -f --show "$FRESHFS_IMG")
  mkdir -p "$FRESHFS_MNT"
}

freshfs_new() {
  if mountpoint -q "$FRESHFS_MNT"; then umount "$FRESHFS_MNT"; fi
  # mkfs refuses a device still held for a moment after its umount (a
  # test's mount namespace keeps a copy until it ends): retry for up to
  # half a minute.
  local try
  for try in $(seq 30); do
    freshfs_ours || { echo "$FRESHFS_DEV no longer backs $FRESHFS_IMG: stopping" >&2; return 1; }
    if mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$FRESHFS_DEV" 2>/dev/null; then
      mount "$FRESHFS_DEV" "$FRESHFS_MNT"
      return
    fi
    sleep 1
  done
  echo "mkfs.ext4 $FRESHFS_DEV kept failing" >&2
  return 1
}

freshfs_drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

freshfs_done() {
  if [ -n "$FRESHFS_MNT" ] && mountpoint -q "$FRESHFS_MNT" 2>/dev/null; then umount "$FRESHFS_MNT"; fi
  if freshfs_ours; then losetup -d "$FRESHFS_DEV"; fi
  FRESHFS_DEV=
}
