#!/usr/bin/env bash
# Mount a passthrough mirror of a fresh directory, idmapped like a container
# root (b:0:100000:65536), create files as container users, and show the
# owners through both views. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/idfuse
work=$(mktemp -d /tmp/idfuse-demo.XXXXXX)
chmod 755 "$work"
src=$work/source view=$work/view
mkdir -p "$src" "$view"
cleanup() {
  umount "$view" 2>/dev/null || umount -l "$view" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "files on disk: $src"
echo 'owned by root on disk' > "$src/from-host"
mkdir "$src/home" && chown 1000:1000 "$src/home"

echo "+ $bin mount passthrough $src $view --idmap b:0:100000:65536"
"$bin" mount passthrough "$src" "$view" --idmap b:0:100000:65536

# A container process runs as host uid 100000 (its root) or 101000 (its user 1000).
setpriv --reuid=101000 --regid=101000 --clear-groups sh -c "echo hello > '$view/home/by-container-user'"
setpriv --reuid=100000 --regid=100000 --clear-groups sh -c "mkdir '$view/by-container-root'"

echo
echo "== through the idmapped view ($view): ids as the container's host ids"
ls -ln "$view" "$view/home"
echo
echo "== on disk ($src): ids as the container sees them"
ls -ln "$src" "$src/home"
echo
"$bin" idmap --show "$view" || true
