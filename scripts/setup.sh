#!/usr/bin/env bash
# Set up a Debian 12 machine for idfuse: the Debian packages the daemon,
# the tests and the benchmarks use, then a release build. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# fonts-dejavu-core: the text in `idfuse bench`'s results.png.
packages=(fuse3 uidmap acl attr bindfs fio e2fsprogs util-linux kmod mergerfs fuse-overlayfs procps fonts-dejavu-core)
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
cargo build --release --workspace --quiet
