#!/usr/bin/env bash
# Stops what up.sh started: the controllers (or the DaemonSet controller makes its pods again),
# pods (so the runtime runs CNI DEL; a node agent's DaemonSet pods last), then kubelet,
# kube-apiserver, containerd and its shims, etcd; unmounts what they left. Touches nothing else.
set -uo pipefail
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/multinet-cluster}
D=$CLUSTER_DIR
[ -d "$D/run" ] || exit 0
alive() { [ -f "$D/run/$1.pid" ] && kill -0 "$(cat "$D/run/$1.pid")" 2>/dev/null; }
stop() {
  local pid
  [ -f "$D/run/$1.pid" ] || return 0
  pid=$(cat "$D/run/$1.pid")
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  rm -f "$D/run/$1.pid"
}
stop kube-controller-manager
stop kube-scheduler
if alive kube-apiserver && alive kubelet && [ -x "$D/tools/clusterctl" ]; then
  "$D/tools/clusterctl" delete-pods "$D/kubeconfig" 60s || echo "cluster-down: $?: pods not all deleted" >&2
fi
stop kubelet
stop multinetd
stop kube-apiserver
# Shims of our containerd carry its socket address on their command line.
for pid in $(pgrep -f "containerd-shim.*-address $D/containerd/containerd.sock" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
stop containerd
stop etcd
# Mounts left by kubelet and containerd under our dirs, deepest first.
grep -F " $D/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
for sub in device-plugins pod-resources; do
  dp=/var/lib/kubelet/$sub
  if grep -qF " $dp " /proc/mounts && [ "$(stat -c %i "$dp")" = "$(stat -c %i "$D/kubelet/$sub" 2>/dev/null)" ]; then
    umount "$dp"
  fi
done
ip link del mncbr0 2>/dev/null || true
echo "cluster-down: stopped ($D)"
