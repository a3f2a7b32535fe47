#!/usr/bin/env bash
# Installs Open vSwitch with DPDK (Debian's openvswitch-switch-dpdk: OVS 3.1 + DPDK 22.11),
# dpdk-testpmd and the vhost/virtio-user drivers, only when missing. The DPDK vswitchd is run
# by path by the tests; the system's ovs-vswitchd alternative and services are left alone.
set -euo pipefail
want=(openvswitch-switch-dpdk dpdk dpdk-dev librte-net-vhost23 librte-net-virtio23 librte-mempool-ring23 containernetworking-plugins)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "e2e/dpdk: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep the packages' postinst from starting the system's OVS (no init system on CI, and the
# tests start their own): a policy-rc.d that refuses, only for this install.
prc=/usr/sbin/policy-rc.d
own_prc=0
if [ ! -e "$prc" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$prc" && chmod +x "$prc" && own_prc=1
fi
trap '[ "$own_prc" = 1 ] && rm -f "$prc"' EXIT
apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
