#!/usr/bin/env bash
# A soak of the CLI daemon: for MINUTES, a mixed workload through the plain
# mount and an idmapped view of it at once, from several uids, while the
# daemon's RSS, open fds, threads and inode table are sampled every minute;
# then a consistency check, and whether the daemon's figures go back to
# their baseline once the files are gone and the kernel's caches dropped.
#
#   bash scripts/soak.sh MINUTES [memfs|passthrough|both] [OUTDIR]
#
# Defaults: both filesystems at once, results in target/soak/. Each gets
# OUTDIR/FS/samples.csv, summary.txt and the workers' and daemon's logs.
# Run as root (the workers switch uids; the view is an idmapped mount).
#
# Workers (uid as the filesystem stores it; the view maps b:0:100000:65536,
# so fs uid 1000 works through the view as 101000):
#   plain mount: exerciser as 1000, metadata stressor as 2000, git-like
#                churn as 0, untar/verify/rm of /usr/include as 3000
#   view:        exerciser as 101000, churn as 102000, untar/verify/rm as
#                100000 (the container's root)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?usage: soak.sh MINUTES [memfs|passthrough|both] [OUTDIR]}
which=${2:-both}
out=${3:-target/soak}
if [ "$(id -u)" != 0 ]; then
  echo "soak: run as root (workers switch uids, the view is an idmapped mount)" >&2
  exit 1
fi
case "$which" in
  memfs | passthrough) fss=("$which") ;;
  both) fss=(memfs passthrough) ;;
  *) echo "soak: unknown filesystem '$which': memfs, passthrough or both" >&2; exit 2 ;;
esac
[[ "$minutes" =~ ^[0-9]+$ ]] && ((minutes > 0)) || { echo "soak: MINUTES must be a whole number ≥ 1" >&2; exit 2; }

cargo build --release -p idfuse-cli --quiet
worker_bin=$(cargo test --release -p idfuse-fs --test soak_worker --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*soak_worker[^"]*\)".*/\1/p' | tail -1)
[ -x "$worker_bin" ] || { echo "soak: could not build the soak worker" >&2; exit 1; }
idfuse=$PWD/target/release/idfuse
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Everything this run makes lives under one scratch directory that the
# workers' uids can enter; the exit trap takes it all down again.
scratch=$(mktemp -d /tmp/idfuse-soak.XXXXXX)
chmod 0755 "$scratch"
install -m 0755 "$worker_bin" "$scratch/soak_worker"
worker=$scratch/soak_worker
pids=()
cleanup() {
  # The per-filesystem subshells stop their own workers and daemons on TERM.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  awk -v p="$scratch/" 'index($2 "/", p) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The untar workload's tree, and what a correct extraction holds.
tar -C /usr -cf "$scratch/tree.tar" include
mkdir "$scratch/ref"
tar -C "$scratch/ref" -xf "$scratch/tree.tar"
tree_sum() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 md5sum | md5sum | cut -c1-32); }
ref_sum=$(tree_sum "$scratch/ref")
rm -rf "$scratch/ref"
cat >"$scratch/untar.sh" <<'EOF'
#!/bin/bash
# untar.sh DIR SECONDS TARBALL REFSUM: extract, verify, remove, repeat.
set -u
dir=$1; end=$((SECONDS + $2)); rounds=0; files=0
# The last round's tree stays, for the consistency check at the end.
t=$dir/tree
while ((rounds == 0 || SECONDS < end)); do
  rm -rf "$t" || { echo "untar: rm -rf $t failed" >&2; exit 1; }
  mkdir "$t" && tar -C "$t" -xf "$3" || { echo "untar: extraction into $t failed" >&2; exit 1; }
  sum=$(cd "$t" && find . -type f -print0 | sort -z | xargs -0 md5sum | md5sum | cut -c1-32)
  [ "$sum" = "$4" ] || { echo "untar: round $rounds: the extracted tree differs from the tarball" >&2; exit 1; }
  files=$((files + $(find "$t" | wc -l)))
  rounds=$((rounds + 1))
done
echo "ops=$files rounds=$rounds"
EOF
chmod 0755 "$scratch/untar.sh"

as() { local uid=$1; shift; setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }

soak_one() {
  local fs=$1 dir=$scratch/$fs res=$out/$fs
  local mnt=$dir/mnt view=$dir/view src=$dir/src daemon
  # This runs in a subshell of its own: stop its own workers and daemon
  # (by pid) and unmount its own mounts when it ends, however it ends.
  pids=()
  trap "for p in \${pids[@]}; do kill -KILL \$p 2>/dev/null || true; done
        for m in $view $mnt $src; do umount -l \$m 2>/dev/null || true; done" EXIT
  trap 'exit 143' TERM INT
  mkdir -p "$mnt" "$view" "$res"
  rm -f "$res"/*
  case "$fs" in
    memfs)
      IDFUSE_LOG=info "$idfuse" mount memfs "$mnt" --foreground 2>"$res/daemon.log" &
      daemon=$! ;;
    passthrough)
      mkdir -p "$src"
      mount -t tmpfs -o size=8g,mode=0755 soak-src "$src"
      IDFUSE_LOG=info "$idfuse" mount passthrough "$src" "$mnt" --foreground 2>"$res/daemon.log" &
      daemon=$! ;;
  esac
  pids+=("$daemon")
  for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
  mountpoint -q "$mnt" || { echo "soak: $fs did not mount: $(cat "$res/daemon.log")" >&2; return 1; }
  "$idfuse" idmap --map b:0:100000:65536 "$mnt" "$view"

  sample() { # LABEL: one CSV row of the daemon's figures
    kill -USR1 "$daemon"
    sleep 0.5
    local st rss thr fds
    st=$(sed 's/\x1b\[[0-9;]*m//g' "$res/daemon.log" | grep -o 'stats: .*' | tail -1 | sed 's/stats: //; s/ /,/g; s/[a-z_]*=//g')
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")
    thr=$(awk '/^Threads/ {print $2}' "/proc/$daemon/status")
    fds=$(find "/proc/$daemon/fd" -mindepth 1 -maxdepth 1 | wc -l)
    echo "$1,$rss,$fds,$thr,$st" >>"$res/samples.csv"
  }
  case "$fs" in
    memfs) echo "minute,rss_kib,fds,threads,inodes,looked_up,workers" >"$res/samples.csv" ;;
    passthrough) echo "minute,rss_kib,fds,threads,inodes,inode_fds,workers" >"$res/samples.csv" ;;
  esac
  sample baseline

  # Each worker's directory belongs to its fs uid (and so to uid+100000
  # through the view).
  local secs=$((minutes * 60)) w=()
  for spec in "plain fsx 1000" "plain stress 2000" "plain churn 0" "plain untar 3000" \
    "view fsx 1000" "view churn 2000" "view untar 0"; do
    read -r where kind uid <<<"$spec"
    local d=$mnt/$where-$kind
    mkdir "$d" && chown "$uid:$uid" "$d"
    local at=$mnt runas=$uid
    [ "$where" = view ] && at=$view runas=$((uid + 100000))
    local log=$res/$where-$kind.log
    if [ "$kind" = untar ]; then
      as "$runas" "$scratch/untar.sh" "$at/$where-$kind" "$secs" "$scratch/tree.tar" "$ref_sum" >"$log" 2>&1 &
    else
      as "$runas" "$worker" "$kind" "$at/$where-$kind" "$secs" "$RANDOM" >"$log" 2>&1 &
    fi
    w+=("$!:$where-$kind")
    pids+=("$!")
  done
  local start=$SECONDS minute=0 running=1
  while ((running)); do
    running=0
    for e in "${w[@]}"; do kill -0 "${e%%:*}" 2>/dev/null && running=1; done
    if ((SECONDS - start >= (minute + 1) * 60)); then
      minute=$((minute + 1))
      sample "$minute"
    fi
    ((running)) && sleep 1
  done
  local errors=0 ops=0 line
  : >"$res/summary.txt"
  for e in "${w[@]}"; do
    local pid=${e%%:*} name=${e#*:} rc=0
    wait "$pid" || rc=$?
    line=$(grep -o 'ops=[0-9]*.*' "$res/$name.log" | tail -1 || true)
    if ((rc != 0)) || [ -z "$line" ]; then
      errors=$((errors + 1))
      echo "ERROR $name (exit $rc): $(tail -3 "$res/$name.log" | tr '\n' ' ')" >>"$res/summary.txt"
    else
      ops=$((ops + $(sed 's/ops=\([0-9]*\).*/\1/' <<<"$line")))
      echo "$name: $line" >>"$res/summary.txt"
    fi
  done
  sample end-of-load

  # Consistency: links agree with names; the view shows the plain tree's
  # names and sizes with owners shifted by 100000; for the mirror, the
  # mount shows exactly SOURCE, contents included.
  listing() { (cd "$1" && find . -printf './%P %y %s %m %U %G\n' | sort); }
  if ! "$worker" check "$mnt" >>"$res/summary.txt" 2>&1; then
    errors=$((errors + 1)); echo "ERROR nlink check failed" >>"$res/summary.txt"
  fi
  if ! diff <(listing "$mnt" | awk '{ $5 += 100000; $6 += 100000; print }') \
    <(listing "$view" | awk '{ print }') >"$res/view.diff"; then
    errors=$((errors + 1)); echo "ERROR the view differs from the plain mount (view.diff)" >>"$res/summary.txt"
  fi
  if [ "$fs" = passthrough ]; then
    if ! diff <(listing "$src") <(listing "$mnt") >"$res/source.diff" ||
      ! diff <(cd "$src" && find . -type f -print0 | sort -z | xargs -0 -r md5sum) \
        <(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 -r md5sum) >>"$res/source.diff"; then
      errors=$((errors + 1)); echo "ERROR SOURCE and the mount differ (source.diff)" >>"$res/summary.txt"
    fi
  fi
  local daemon_errors
  daemon_errors=$(sed 's/\x1b\[[0-9;]*m//g' "$res/daemon.log" | grep -c -E '^[^ ]+ +(ERROR|WARN) ' || true)
  if ((daemon_errors)); then
    errors=$((errors + 1)); echo "ERROR the daemon logged $daemon_errors warnings or errors" >>"$res/summary.txt"
  fi

  # Back to baseline: remove what is left, drop the kernel's caches, and
  # give the FORGETs a moment to arrive.
  rm -rf "${mnt:?}"/*
  for _ in 1 2 3 4 5; do echo 3 >/proc/sys/vm/drop_caches; sleep 1; done
  sample after-drop-caches
  umount "$view"
  umount "$mnt"
  wait "$daemon" || { errors=$((errors + 1)); echo "ERROR the daemon exited non-zero" >>"$res/summary.txt"; }
  [ "$fs" = passthrough ] && umount "$src"
  {
    echo "$fs: $minutes min, $ops operations, $errors errors"
    echo "samples (baseline, each minute, end of load, after drop_caches):"
    column -s, -t "$res/samples.csv"
  } | tee -a "$res/summary.txt"
  ((errors == 0))
}

status=0
declare -A job
for fs in "${fss[@]}"; do
  soak_one "$fs" &
  job[$fs]=$!
  pids+=("$!")
done
for fs in "${fss[@]}"; do
  wait "${job[$fs]}" || { status=1; echo "soak: $fs FAILED (see $out/$fs/summary.txt)" >&2; }
done
echo "soak: results in $out"
exit "$status"
