#!/usr/bin/env bash
# Installs QEMU (bookworm-backports, for the igb SR-IOV model), the tools that build the guest and
# Debian's DPDK (dpdk-testpmd and the igb VF PMD, which the runner copies into the guest), and unpacks a Debian kernel + busybox into the cache. Idempotent; prints the directory
# holding the unpacked guest parts.
set -euo pipefail
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/multinet}
export DEBIAN_FRONTEND=noninteractive
bp=/etc/apt/sources.list.d/multinet-backports.list
need_update=0
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" > "$bp"
  need_update=1
fi
qemu_ok() { command -v qemu-system-x86_64 >/dev/null && qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'; }
missing=()
qemu_ok || missing+=(qemu)
for t in cpio xz gzip; do command -v $t >/dev/null || missing+=($t); done
dpdk_pkgs=(dpdk-dev librte-bus-pci23 librte-net-e1000-23 librte-mempool-ring23)
dpdk_ok() { [ -x /usr/bin/dpdk-testpmd ] && [ -e /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_net_e1000.so ]; }
dpdk_ok || missing+=(dpdk)
if [ ${#missing[@]} -gt 0 ] || [ "$need_update" = 1 ] || [ ! -f "$CACHE_DIR/vm/kernel.version" ]; then
  apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
fi
if ! qemu_ok; then
  apt-get -o DPkg::Lock::Timeout=300 install -y -q -t bookworm-backports --no-install-recommends qemu-system-x86 >/dev/null
fi
command -v cpio >/dev/null && command -v xz >/dev/null || apt-get -o DPkg::Lock::Timeout=300 install -y -q cpio xz-utils kmod >/dev/null
dpdk_ok || apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${dpdk_pkgs[@]}" >/dev/null

# The newest 6.x kernel image backports offers, pinned in the cache by its version.
if [ ! -f "$CACHE_DIR/vm/kernel.version" ]; then
  kpkg=$(apt-cache depends -t bookworm-backports linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$kpkg" ] || { echo "e2e/vm: cannot find the backports kernel package" >&2; exit 1; }
  mkdir -p "$CACHE_DIR/vm"; echo "$kpkg" > "$CACHE_DIR/vm/kernel.version.want"
  d="$CACHE_DIR/vm/$kpkg"
  rm -rf "$d.tmp" && mkdir -p "$d.tmp/debs"
  (cd "$d.tmp/debs" && apt-get download -q -t bookworm-backports "$kpkg" busybox-static >/dev/null)
  for deb in "$d.tmp"/debs/*.deb; do dpkg -x "$deb" "$d.tmp/root"; done
  rm -rf "$d" && mv "$d.tmp" "$d"
  mv "$CACHE_DIR/vm/kernel.version.want" "$CACHE_DIR/vm/kernel.version"
fi
echo "$CACHE_DIR/vm/$(cat "$CACHE_DIR/vm/kernel.version")"
