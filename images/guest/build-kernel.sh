#!/usr/bin/env bash
# Builds kennel's guest kernel (an uncompressed ELF vmlinux) from Debian's linux-source-6.1:
# tinyconfig + images/guest/kernel.config, with images/guest/patches/*.patch applied.
# The output is cached under $KENNEL_CACHE/kernel/<hash of every input>/, so a second run is instant.
# Prints the path of the cached vmlinux on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${KENNEL_CACHE:-/var/cache/kennel}
src_tar=${KENNEL_LINUX_SOURCE:-/usr/src/linux-source-6.1.tar.xz}
log() { printf '[guest-kernel] %s\n' "$*" >&2; }

[ -f "$src_tar" ] || { log "missing $src_tar (apt-get install linux-source-6.1)"; exit 1; }
mkdir -p "$cache/kernel"
# One build at a time; a second caller waits and then finds the cached result.
exec 9>"$cache/kernel/.lock"
flock 9
key=$( { stat -c '%n %s %Y' "$src_tar"; cat "$here/kernel.config" "$here"/patches/*.patch "$0"; } | sha256sum | cut -c1-16)
out="$cache/kernel/$key"
if [ -f "$out/vmlinux" ]; then
    log "cached: $out/vmlinux"
    echo "$out/vmlinux"
    exit 0
fi

build="$cache/kernel/build-$key"
rm -rf "$cache"/kernel/build-* "$cache"/kernel/.tmp-*
mkdir -p "$build"
start=$(date +%s)
log "[1/4] unpacking $(basename "$src_tar")"
tar -xf "$src_tar" -C "$build" --strip-components=1
log "[2/4] applying patches"
for p in "$here"/patches/*.patch; do
    patch -d "$build" -p1 --quiet < "$p"
done
log "[3/4] configuring (tinyconfig + kernel.config)"
make -C "$build" -s tinyconfig >/dev/null
(cd "$build" && ./scripts/kconfig/merge_config.sh -m .config "$here/kernel.config" >/dev/null)
make -C "$build" -s olddefconfig >/dev/null
# Every line of the fragment must survive olddefconfig, or the guest silently lacks a feature.
missing=0
while IFS= read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    opt=${line%%=*}
    val=${line#*=}
    if [ "$val" = n ]; then
        grep -q "^$opt=" "$build/.config" && { log "config: $opt is set, wanted off"; missing=1; }
    else
        grep -qx "$line" "$build/.config" || { log "config: $line did not stick"; missing=1; }
    fi
done < "$here/kernel.config"
[ "$missing" = 0 ] || { log "kernel.config has options olddefconfig dropped"; exit 1; }
log "[4/4] compiling vmlinux with $(nproc) jobs (several minutes on 2 cores)"
jobs=$(nproc)
if ! make -C "$build" -j"$jobs" vmlinux >"$build/build.log" 2>&1; then
    tail -40 "$build/build.log" >&2
    log "kernel build failed; full log: $build/build.log"
    exit 1
fi
tmp="$cache/kernel/.tmp-$key"
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$build/vmlinux" "$build/System.map" "$build/.config" "$tmp/"
sync "$tmp"/*
rm -rf "$out"
mv "$tmp" "$out"
rm -rf "$build"
log "built in $(( $(date +%s) - start )) s: $out/vmlinux"
echo "$out/vmlinux"
