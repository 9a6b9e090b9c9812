#!/usr/bin/env bash
# Switch FUSE over io_uring on for a test run and put the machine's own
# value back afterwards.
#
#   uring-knob.sh on PID    PID (the test run) needs enable_uring=Y
#   uring-knob.sh off PID   PID is done; the last one out restores the value
#   uring-knob.sh repair    restore after runs that were killed (no live users)
#
# /sys/module/fuse/parameters/enable_uring is machine-wide and several test
# runs may overlap, so the original value is saved once, in a file, while a
# run uses it, and each run registers itself (pid and start time) under a
# lock; whoever leaves last, or the next run after a killed one, restores
# the value. Exit status 3: this kernel has no such switch.
set -euo pipefail
knob=/sys/module/fuse/parameters/enable_uring
if [ -d /run/lock ]; then base=/run/lock; else base=/tmp; fi
dir=$base/idfuse-uring
orig=$dir/enable_uring.orig

if [ ! -e "$knob" ]; then
  modprobe fuse 2>/dev/null || true
fi
if [ ! -e "$knob" ]; then
  echo "uring-knob: $knob does not exist (kernel older than 6.14 or built without CONFIG_FUSE_IO_URING)" >&2
  exit 3
fi

mkdir -p "$dir/users"
exec 8>"$dir/lock"
flock 8

starttime() { # field 22 of /proc/PID/stat, counted after the command name
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  set -- $s
  echo "${20}"
}

prune() {
  local f pid
  for f in "$dir"/users/*; do
    [ -e "$f" ] || continue
    pid=${f##*/}
    if [ "$(starttime "$pid" || true)" != "$(cat "$f")" ]; then
      rm -f "$f"
    fi
  done
}

users() { find "$dir/users" -type f | wc -l; }

restore_if_unused() {
  prune
  if [ "$(users)" = 0 ] && [ -f "$orig" ]; then
    cat "$orig" >"$knob"
    rm -f "$orig"
  fi
}

case "${1:-}" in
  on)
    pid=${2:?usage: uring-knob.sh on PID}
    prune
    # A saved value with no live user is what a killed run left: it is
    # still the machine's own value, so keep it.
    [ -f "$orig" ] || cat "$knob" >"$orig"
    starttime "$pid" >"$dir/users/$pid"
    echo Y >"$knob"
    ;;
  off)
    pid=${2:?usage: uring-knob.sh off PID}
    rm -f "$dir/users/$pid"
    restore_if_unused
    ;;
  repair)
    restore_if_unused
    ;;
  *)
    echo "usage: uring-knob.sh on PID | off PID | repair" >&2
    exit 2
    ;;
esac
