#!/usr/bin/env bash
# Set up a Debian 12 machine for idfuse: the Debian packages the daemon,
# the tests and the benchmarks use, then a release build. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# fonts-dejavu-core: the text in `idfuse bench`'s results.png.
# systemd-container crun lxc busybox-static: the container runtime tests;
# stress-ng: scripts/test-under-load.sh.
packages=(fuse3 uidmap acl attr bindfs fio stress-ng e2fsprogs util-linux kmod mergerfs fuse-overlayfs procps fonts-dejavu-core
          systemd-container crun lxc busybox-static)
# The CephFS client (idfuse-cephfs links libcephfs) and the single-node test
# cluster of scripts/ceph-cluster.sh (mon, memstore OSD, MDS; no mgr).
packages+=(libcephfs-dev ceph-mon ceph-osd ceph-mds ceph-common ceph-fuse)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -c /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
fi
if [ ! -c /dev/fuse ]; then
  echo "setup: this machine has no /dev/fuse; idfuse needs a kernel with FUSE (CONFIG_FUSE_FS)" >&2
  exit 1
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
# Not --quiet: the first build takes minutes, and cargo's progress shows it is alive.
cargo build --release --workspace

# Install (README, "What setup installs"): idfuse on PATH, mount(8)'s helper
# for -t fuse.idfuse, man pages and bash completion, generated from the CLI.
bin=${CARGO_TARGET_DIR:-target}/release/idfuse
install -D -m 755 "$bin" /usr/local/bin/idfuse
ln -sfn /usr/local/bin/idfuse /usr/sbin/mount.fuse.idfuse
/usr/local/bin/idfuse generate-man /usr/local/share/man/man1 >/dev/null
/usr/local/bin/idfuse generate-completions /usr/local/share/bash-completion/completions >/dev/null
echo "setup: installed /usr/local/bin/idfuse, /usr/sbin/mount.fuse.idfuse, man pages (man idfuse) and bash completion"
