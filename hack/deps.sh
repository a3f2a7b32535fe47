#!/usr/bin/env bash
# Installs the Debian packages the unit and netns tiers use, only when missing.
#   hwdata: pci.ids for vendor/device names; iproute2: `ip` for netns tests;
#   containernetworking-plugins: the reference CNI plugins used as real delegates;
#   gcc, libc6-dev: cgo for the race detector (`go test -race`).
set -euo pipefail
want=(hwdata iproute2 containernetworking-plugins gcc libc6-dev)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "hack/deps.sh: missing ${missing[*]}; run as root to install them" >&2
  exit 0
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
