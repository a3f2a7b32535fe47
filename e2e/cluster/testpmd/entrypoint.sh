#!/bin/busybox sh
# The DPDK pod of the e2e cluster tier: dpdk-testpmd on what multinet gave the pod, its EAL
# device arguments from `multinetctl dpdk-args` (network-status through the downward API, the
# device plugin's env). testpmd runs at its interactive prompt, reading commands from the FIFO
# $CTL/cmd (a hostPath the test writes "start"/"stop" to), so forwarding can stop while the
# vhost-user port stays connected and OVS still reports its counters.
# Usage: entrypoint.sh txonly|rxonly
set -eu
bb=/bin/busybox
mode=$1
annot=/etc/podnetinfo/annotations
ctl=${CTL:-/ctl}
# The meta-plugin writes network-status during the sandbox's CNI ADD; kubelet refreshes the
# downward-API file when it sees the updated pod, which may be after the container started.
i=0
while ! $bb grep -q '^k8s.v1.cni.cncf.io/network-status=' "$annot" 2>/dev/null; do
  i=$((i + 1))
  if [ "$i" -gt 300 ]; then echo "entrypoint: no network-status in $annot after 30s" >&2; exit 1; fi
  $bb sleep 0.1
done
args=$(/usr/local/bin/multinetctl dpdk-args --annotations "$annot" -o lines)
echo "EAL-ARGS: $(echo "$args" | $bb tr '\n' ' ')"
$bb mkdir -p /var/run /tmp
$bb rm -f "$ctl/cmd"
$bb mkfifo "$ctl/cmd"
# Held open read-write: testpmd never sees EOF when a writer goes.
exec 3<>"$ctl/cmd"
IFS='
'
# shellcheck disable=SC2086 # one EAL argument a line
exec stdbuf -oL dpdk-testpmd -l 0,1 --no-huge -m 512 $args -- -i --total-num-mbufs=4096 --forward-mode="$mode" <&3
