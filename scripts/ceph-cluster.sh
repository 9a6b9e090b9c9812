#!/usr/bin/env bash
# A throw-away single-node Ceph cluster for idfuse's CephFS tests:
#   scripts/ceph-cluster.sh start DIR   # prints nothing; DIR/ceph.conf is the client config
#   scripts/ceph-cluster.sh stop DIR
# One mon, one memstore OSD (pools of size 1), one MDS, cephx on, all on
# 127.0.0.1 in a port range of its own, everything (conf, keyrings, data,
# logs, sockets) inside DIR. It installs nothing: setup.sh installs the
# Debian packages (ceph-mon ceph-osd ceph-mds ceph-common ceph-fuse).
# Daemons are tracked by the pids it records in DIR/pids and stopped with
# SIGKILL (an MDS given SIGTERM respawns itself under the same pid). A start
# after a crashed run first stops what DIR/pids still names, and a watcher
# stops the cluster when the process that started it dies without doing so
# (CEPH_CLUSTER_OWNER=PID names another owner, 0 none).
set -euo pipefail

starting=
die() {
  echo "ceph-cluster: $*" >&2
  # Tests delete DIR after a failed start: show the end of the log named.
  local log
  log=$(printf '%s\n' "$*" | grep -o -- "$dir/log/[^ ;]*\.log" | head -1 || true)
  if [ -n "$log" ] && [ -f "$log" ]; then
    echo "ceph-cluster: last lines of $log:" >&2
    tail -n 15 "$log" | sed 's/^/  /' >&2
  fi
  # A failed start leaves nothing running.
  if [ -n "$starting" ]; then stop_daemons; fi
  exit 1
}

usage() { die "usage: $0 start|stop DIR"; }

[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)
conf=$dir/ceph.conf

# Is $1 a live process whose command line names our directory?
ours() {
  local pid=$1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
}

# FUSE clients (ceph-fuse, idfuse) of this cluster: unmount and reap them
# first, so none is left reconnecting to a dead (or the next) cluster.
stop_clients() {
  local pid mp
  for pid in $(pgrep -f -- "$conf" || true); do
    [ "$pid" = $$ ] && continue
    grep -qxF "$pid" "$dir/pids" 2>/dev/null && continue
    ours "$pid" || continue
    # Its arguments that are fuse mountpoints.
    while IFS= read -r mp; do
      [ -n "$mp" ] || continue
      if awk -v m="$mp" '$2 == m && $3 ~ /^fuse/ {f=1} END {exit !f}' /proc/self/mounts; then
        umount -l "$mp" 2>/dev/null || true
      fi
    done < <(tr '\0' '\n' <"/proc/$pid/cmdline")
    kill -KILL "$pid" 2>/dev/null || true
  done
}

stop_daemons() {
  local pid
  [ -f "$dir/pids" ] || return 0
  while read -r pid; do
    [ -n "$pid" ] || continue
    if ours "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done <"$dir/pids"
  while read -r pid; do
    [ -n "$pid" ] || continue
    for _ in $(seq 100); do
      ours "$pid" || break
      sleep 0.05
    done
  done <"$dir/pids"
  rm -f "$dir/pids"
}

ceph_() { timeout 20 ceph -c "$conf" "$@"; }

# A test that dies without stopping its cluster (SIGKILL, or a crash inside
# libcephfs) would leave the daemons running for ever. A watcher stops the
# cluster once the process that started it is gone: CEPH_CLUSTER_OWNER, by
# default our parent; 0 for none (a cluster started by hand).
script=$(readlink -f "$0")
watch_owner() {
  local owner=${CEPH_CLUSTER_OWNER:-$PPID}
  [ "$owner" != 0 ] || return 0
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec bash "$2" stop "$3"' \
    ceph-cluster-watch "$owner" "$script" "$dir/" >/dev/null 2>&1 </dev/null 9>&- &
  echo $! >"$dir/watcher.pid"
}

# The watcher of this directory, unless it is us (it execs `stop`).
stop_watcher() {
  local w
  [ -f "$dir/watcher.pid" ] || return 0
  w=$(cat "$dir/watcher.pid")
  if [ -n "$w" ] && [ "$w" != $$ ] && ours "$w"; then
    kill -KILL "$w" 2>/dev/null || true
  fi
  rm -f "$dir/watcher.pid"
}

# Start a daemon in the foreground of a background job and record its pid.
spawn() {
  local name=$1; shift
  # Without fd 9: a daemon that inherited the start lock would hold it for
  # its whole life, and every other cluster's start would wait for it.
  setsid "$@" -f -c "$conf" >>"$dir/log/$name.out" 2>&1 </dev/null 9>&- &
  echo $! >>"$dir/pids"
  # By name too, for tests that pause one daemon (SIGSTOP/SIGCONT).
  echo $! >"$dir/run/$name.daemon-pid"
}

# No TCP socket in any state (listening, connected, TIME_WAIT) holds a
# port of the range: a port that an outgoing connection took as its local
# port would make the monitor's bind fail.
port_free() {
  ! ss -Htan "sport >= :$1 and sport <= :$2" 2>/dev/null | grep -q .
}

start() {
  for b in ceph-mon ceph-osd ceph-mds ceph ceph-authtool monmaptool; do
    command -v "$b" >/dev/null || die "$b is missing; run scripts/setup.sh (it installs Debian's ceph-mon, ceph-osd, ceph-mds, ceph-common)"
  done
  # Leftovers of a killed run in this directory.
  stop_watcher
  stop_clients
  stop_daemons
  find "$dir" -mindepth 1 -delete
  mkdir -p "$dir"/{log,run,mon/a,osd/0,mds/a}
  starting=1

  # A port range of our own: 100 ports chosen from the directory's name,
  # moving on while any of them is in use, all below the kernel's
  # ephemeral range (net.ipv4.ip_local_port_range), which outgoing
  # connections (other clusters' daemons and clients among them) draw from.
  # Clusters starting at once choose in turn: the lock is held until our
  # monitor listens on the first port of the range.
  exec 9>/run/lock/idfuse-ceph-cluster.lock
  flock -w 120 9 || die "another cluster start holds /run/lock/idfuse-ceph-cluster.lock"
  local h base low lo slots
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range || low=32768
  lo=10000
  slots=$(((low - lo) / 100))
  [ "$slots" -ge 10 ] || die "net.ipv4.ip_local_port_range starts at $low: no room below it for a cluster's 100 ports (above $lo)"
  h=$(printf '%s' "$dir" | cksum | cut -d' ' -f1)
  base=$((lo + (h % slots) * 100))
  for _ in $(seq "$slots"); do
    port_free "$base" $((base + 99)) && break
    base=$((base + 100)); [ $((base + 99)) -lt "$low" ] || base=$lo
  done
  echo "$base" >"$dir/port-base"

  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$base,v1:127.0.0.1:$((base + 1))]
mon initial members = a
public addr = 127.0.0.1
ms bind port min = $((base + 2))
ms bind port max = $((base + 99))
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/\$cluster.\$name.keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
paxos propose interval = 0.1
mon data avail warn = 1
mon data avail crit = 0
[client]
# CEPH_CLUSTER_CLIENT_DEBUG=20 makes the clients log what they wait for.
debug client = ${CEPH_CLUSTER_CLIENT_DEBUG:-0}
# Several clients of one name (two mounts, ceph-fuse) each get a socket.
admin socket = $dir/run/\$name.\$pid.asok
log file = $dir/log/\$name.\$pid.log
pid file = $dir/run/\$name.\$pid.pid
[mon]
mon data = $dir/mon/\$id
[osd]
osd data = $dir/osd/\$id
osd objectstore = memstore
# The store is RAM; CEPH_CLUSTER_OSD_BYTES sizes it (1 GiB by default).
memstore device bytes = ${CEPH_CLUSTER_OSD_BYTES:-1073741824}
osd max object name len = 256
osd max object namespace len = 64
[mds]
mds data = $dir/mds/\$id
CONF

  ceph-authtool "$dir/ceph.mon.a.keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$dir/ceph.client.admin.keyring" --create-keyring --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$dir/ceph.mon.a.keyring" --import-keyring "$dir/ceph.client.admin.keyring" >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$base,v1:127.0.0.1:$((base + 1))]" "$dir/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/ceph.mon.a.keyring" \
    >>"$dir/log/mkfs.out" 2>&1 || die "ceph-mon --mkfs failed; see $dir/log"
  spawn mon.a ceph-mon -i a

  local uuid
  uuid=$(cat /proc/sys/kernel/random/uuid)
  local id
  # The first answer of a new monitor: slow on a loaded machine.
  id=$(timeout 60 ceph -c "$conf" osd create "$uuid") || die "the monitor did not come up in 60 s; see $dir/log/mon.a.log"
  exec 9>&-
  [ "$id" = 0 ] || die "unexpected osd id $id"
  ceph-osd -c "$conf" -i 0 --mkfs --mkkey --osd-uuid "$uuid" \
    --keyring "$dir/osd/0/keyring" --no-mon-config >>"$dir/log/mkfs.out" 2>&1 || die "ceph-osd --mkfs failed; see $dir/log"
  ceph_ auth add osd.0 osd 'allow *' mon 'allow profile osd' -i "$dir/osd/0/keyring" >/dev/null 2>&1
  spawn osd.0 ceph-osd -i 0 --keyring "$dir/osd/0/keyring"

  ceph_ auth get-or-create mds.a mon 'allow profile mds' osd 'allow rwx' mds 'allow' \
    -o "$dir/mds/a/keyring" >/dev/null 2>&1
  ceph_ osd pool create cephfs_metadata 8 >/dev/null 2>&1
  ceph_ osd pool create cephfs_data 8 >/dev/null 2>&1
  ceph_ fs new cephfs cephfs_metadata cephfs_data >/dev/null 2>&1
  spawn mds.a ceph-mds -i a --keyring "$dir/mds/a/keyring"

  # Up when the MDS is active and the data pool takes a write.
  local ok= deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    if timeout 10 ceph -c "$conf" mds stat 2>/dev/null | grep -q 'up:active'; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || die "the MDS did not become active in 60 s; see $dir/log"
  timeout 60 rados -c "$conf" -p cephfs_data put probe /dev/null \
    || die "the data pool does not take writes; see $dir/log/osd.0.log"
  timeout 30 rados -c "$conf" -p cephfs_data rm probe || true
  watch_owner
}

case $cmd in
  start) start ;;
  stop)
    stop_watcher
    stop_clients
    stop_daemons
    ;;
  *) usage ;;
esac
