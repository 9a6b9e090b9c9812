#!/usr/bin/env bash
# Mount a plain passthrough mirror of a fresh directory and an idmapped view
# of it (b:0:100000:65536, as for a container whose root is host uid
# 100000), create files as container users, and show each file's owner on
# disk, through the mirror and through the view, side by side. Cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/idfuse
work=$(mktemp -d /tmp/idfuse-demo.XXXXXX)
chmod 755 "$work"
src=$work/source mirror=$work/mirror view=$work/view
mkdir -p "$src" "$mirror" "$view"
cleanup() {
  for m in "$view" "$mirror"; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

echo 'owned by root on disk' > "$src/from-host"
mkdir "$src/home" && chown 1000:1000 "$src/home"

echo "+ idfuse mount passthrough $src $mirror"
"$bin" mount passthrough "$src" "$mirror"
echo "+ idfuse mount passthrough $src $view --idmap b:0:100000:65536"
"$bin" mount passthrough "$src" "$view" --idmap b:0:100000:65536

# A container process runs as host uid 100000 (its root) or 101000 (its user 1000).
echo "+ as uid 101000 (container user 1000): echo hello > $view/home/by-container-user"
setpriv --reuid=101000 --regid=101000 --clear-groups sh -c "echo hello > '$view/home/by-container-user'"
echo "+ as uid 100000 (container root): mkdir $view/by-container-root"
setpriv --reuid=100000 --regid=100000 --clear-groups sh -c "mkdir '$view/by-container-root'"

echo
echo "The same files, owner uid:gid as each path shows them:"
row() { printf '  %-26s %-14s %-14s %s\n' "$@"; }
row "file" "on disk" "plain mirror" "idmapped view"
row "" "(source)" "(mirror)" "(view: +100000)"
for f in from-host home home/by-container-user by-container-root; do
  row "$f" "$(stat -c %u:%g "$src/$f")" "$(stat -c %u:%g "$mirror/$f")" "$(stat -c %u:%g "$view/$f")"
done
echo
paste -d '\t' <(echo "+ ls -ln mirror   (plain)"; ls -ln "$mirror") \
               <(echo "+ ls -ln view   (idmapped)"; ls -ln "$view") |
  awk -F '\t' '{ printf "  %-62s %s\n", $1, $2 }'
echo
echo "idmap of the view (idfuse idmap --show $view): $("$bin" idmap --show "$view" 2>&1 || true)"
