#!/usr/bin/env bash
# Starts a real single-node Kubernetes under $CLUSTER_DIR: etcd, kube-apiserver (RBAC, service
# account signing, loopback ports, privileged pods), kube-scheduler, kube-controller-manager
# (service-account tokens, kube-root-ca.crt, DaemonSets), our own containerd (never the system
# one) and kubelet with its own root dir. Writes $CLUSTER_DIR/kubeconfig, links kubectl into
# $CLUSTER_DIR/tools and waits until the node is Ready.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/multinet-cluster}
NODE=${NODE_NAME:-node1}
# MULTINET_MODE=thick runs the node agent multinetd and writes the conf with the multinet-shim;
# thin (the default) runs the multinet binary for every CNI call; none brings up the cluster
# network alone, without anything of multinet's (no CRD, RBAC or conf): an operator installs it
# with kubectl (make e2e-cluster-install).
MODE=${MULTINET_MODE:-thin}
case "$MODE" in thin|thick|none) ;; *) echo "cluster-up: MULTINET_MODE=$MODE: want thin, thick or none" >&2; exit 2;; esac
D=$CLUSTER_DIR
log() { echo "cluster-up: $*"; }

alive() { [ -f "$D/run/$1.pid" ] && kill -0 "$(cat "$D/run/$1.pid")" 2>/dev/null; }
running_mode() { cat "$D/run/mode" 2>/dev/null; }
if alive kube-apiserver && alive kubelet && alive containerd && alive etcd && [ "$(running_mode)" = "$MODE" ]; then
  log "already up ($D, $MODE mode)"; exit 0
fi
"$here/down.sh" >/dev/null 2>&1 || true

export DEBIAN_FRONTEND=noninteractive
missing=()
for p in containerd runc containernetworking-plugins openssl busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || { apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null; apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
fi
t0=$(date +%s)
BIN=$("$here/build-tools.sh" | tail -1)
log "tools in $BIN ($(( $(date +%s) - t0 ))s)"

rm -rf "$D/etcd" "$D/kubelet" "$D/containerd" "$D/run" "$D/logs" "$D/ipam" "$D/multinet-cache" "$D/multinet.d" "$D/net.d/00-multinet.conflist" "$D/net.d/cbr0" "$D/net.d/vendor-cni-chain" "$D/static-pods" "$D/sim-sysfs" "$D/devinfo" "$D/cni-state"
mkdir -p "$D"/{pki,etcd,kubelet,containerd/root,containerd/state,run,logs,net.d,cni-bin,ipam,images,tools,static-pods}
# The reference plugins are the cluster network (stand-in for Calico) and later the delegates.
for p in /usr/lib/cni/*; do ln -sf "$p" "$D/cni-bin/"; done

ln -sf "$BIN/kubectl" "$D/tools/kubectl"
(cd "$repo" && CGO_ENABLED=0 go build -o "$D/tools/clusterctl" ./e2e/cluster/clusterctl && CGO_ENABLED=0 go build -o "$D/tools/pause" ./e2e/cluster/pause \
  && if [ "$MODE" != none ]; then CGO_ENABLED=0 go build -o "$D/cni-bin/" ./cmd/multinet ./cmd/sriov ./cmd/passthru ./cmd/vhostuser; fi \
  && if [ "$MODE" = thick ]; then CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$D/cni-bin/" ./cmd/multinet-shim \
       && CGO_ENABLED=0 go build -o "$D/tools/" ./cmd/multinetd; fi)

pki=$D/pki
if [ ! -f "$pki/serving.crt" ]; then
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/serving.key" -out "$pki/serving.crt" -days 30 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
  echo "tok-admin-$(openssl rand -hex 8),admin,admin,system:masters" > "$pki/tokens.csv"
fi
token=$(cut -d, -f1 "$pki/tokens.csv")

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_port=$(freeport); peer_port=$(freeport); api_port=$(freeport)

start() { # name, then the command
  local name=$1; shift
  setsid "$@" >"$D/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$D/run/$name.pid"
}
start etcd "$BIN/etcd" --data-dir "$D/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" --initial-cluster "default=http://127.0.0.1:$peer_port"
# Kept as a script so tests can stop the API server and start it again (DEL without the API).
cat > "$D/run/kube-apiserver.sh" <<EOT
#!/bin/sh
exec "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \\
  --secure-port "$api_port" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \\
  --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \\
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \\
  --service-account-issuer https://kubernetes.default.svc --token-auth-file "$pki/tokens.csv" \\
  --authorization-mode Node,RBAC --service-cluster-ip-range 10.96.0.0/24 \\
  --kubelet-preferred-address-types InternalIP,Hostname --enable-admission-plugins NodeRestriction \\
  --allow-privileged=true --cert-dir "$pki/apiserver"
EOT
chmod +x "$D/run/kube-apiserver.sh"
start kube-apiserver "$D/run/kube-apiserver.sh"

# kubeconfig FILE USER TOKEN: a kubeconfig for this API server.
kubeconfig() {
  cat > "$1" <<EOT
apiVersion: v1
kind: Config
clusters:
- name: multinet
  cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$pki/serving.crt"}
users:
- name: $2
  user: {token: "$3"}
contexts:
- name: multinet
  context: {cluster: multinet, user: $2}
current-context: multinet
EOT
  chmod 600 "$1"
}
kubeconfig "$D/kubeconfig" admin "$token"

# containerd: its own config, root, state and socket under $D; the CRI plugin runs CNI from $D.
sock=$D/containerd/containerd.sock
containerd config default \
  | sed -e "s|^root = .*|root = \"$D/containerd/root\"|" \
        -e "s|^state = .*|state = \"$D/containerd/state\"|" \
        -e "/^\[grpc\]/,/^\[/ s|^  address = .*|  address = \"$sock\"|" \
        -e "/^\[ttrpc\]/,/^\[/ s|^  address = .*|  address = \"$sock.ttrpc\"|" \
        -e "s|sandbox_image = .*|sandbox_image = \"registry.k8s.io/pause:3.10\"|" \
        -e "s|restrict_oom_score_adj = .*|restrict_oom_score_adj = true|" \
        -e "s|bin_dir = .*|bin_dir = \"$D/cni-bin\"|" \
        -e "s|conf_dir = .*|conf_dir = \"$D/net.d\"|" \
        -e "s|SystemdCgroup = .*|SystemdCgroup = false|" \
  > "$D/containerd/config.toml"
grep -q "address = \"$sock\"" "$D/containerd/config.toml" || { echo "cluster-up: could not set the containerd socket" >&2; exit 1; }

if [ ! -f "$D/net.d/10-bridge.conflist" ]; then
cat > "$D/net.d/10-bridge.conflist" <<EOT
{
  "cniVersion": "1.0.0",
  "name": "cbr0",
  "plugins": [
    {"type": "bridge", "bridge": "mncbr0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "dataDir": "$D/ipam", "ranges": [[{"subnet": "10.244.0.0/24"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOT
fi
# The node is a simulated SR-IOV node: CNI plugins run by containerd read sysfs under
# $D/sim-sysfs (tests link their fake trees there), keep device-info under $D/devinfo and
# their state under $D/cni-state.
start containerd env MULTINET_SYSFS_ROOT="$D/sim-sysfs" MULTINET_DEVINFO_DIR="$D/devinfo" MULTINET_STATE_DIR="$D/cni-state" MULTINET_POOLS_FILE="$D/pools.json" containerd --config "$D/containerd/config.toml"

for i in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "cluster-up: containerd did not start; see $D/logs/containerd.log" >&2; tail -20 "$D/logs/containerd.log" >&2; exit 1; }
"$D/tools/clusterctl" image "$D/tools/pause" /pause registry.k8s.io/pause:3.10 "$D/images/pause.tar"
ctr -a "$sock" -n k8s.io images import "$D/images/pause.tar" >/dev/null

for i in $(seq 150); do curl -skf -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" >/dev/null && break; sleep 0.2; done
curl -skf -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" >/dev/null \
  || { echo "cluster-up: kube-apiserver not ready; see $D/logs/kube-apiserver.log" >&2; tail -20 "$D/logs/kube-apiserver.log" >&2; exit 1; }
echo "$api_port" > "$D/run/api-port"
# The scheduler places DaemonSet pods (tests' own pods name their node). The controller-manager
# runs the DaemonSet, Deployment, namespace and garbage-collector controllers, makes every
# namespace's default ServiceAccount and publishes kube-root-ca.crt (the CA of the serving cert
# that in-cluster clients verify); it signs legacy tokens with the API server's key. Both use the
# admin kubeconfig (no per-controller credentials) and serve no port: several clusters may run
# on this machine.
start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$D/kubeconfig" --leader-elect=false --secure-port 0
start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$D/kubeconfig" --leader-elect=false \
  --secure-port 0 --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/serving.crt"

cat > "$D/kubelet-config.yaml" <<EOT
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$sock
podCIDR: 10.244.0.0/24
address: 127.0.0.1
port: $(freeport)
healthzPort: 0
readOnlyPort: 0
staticPodPath: $D/static-pods
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
EOT
# Mounts made on the host after a container started (pod netns files under /run/netns, what a
# chrooted delegate needs under the host root) reach it only through a shared mount: containerd
# refuses HostToContainer propagation from a private one. This machine's / is private (a real
# node's systemd makes it shared); make it rshared as kind's node entrypoint does. Nothing is
# mounted differently by it, and down.sh need not undo it.
if [ "$(findmnt -no PROPAGATION /)" = private ]; then
  log "making / rshared (mount propagation for HostToContainer volumes)"
  mount --make-rshared /
fi
# kubelet serves the device-plugin registration socket at the fixed path
# /var/lib/kubelet/device-plugins whatever --root-dir says; bind our dir there so plugins and
# tests find it at $D/kubelet/device-plugins. Its PodResources socket is under --root-dir: bind
# that dir to the default path too, so an installed agent's conf (default paths) reaches it.
# Refuse if another kubelet owns those paths.
for sub in device-plugins pod-resources; do
  dp=/var/lib/kubelet/$sub
  mkdir -p "$D/kubelet/$sub" "$dp"
  if ! grep -qF " $dp " /proc/mounts; then
    if [ -S "$dp/kubelet.sock" ] && pgrep -x kubelet >/dev/null; then
      echo "cluster-up: another kubelet serves $dp; stop it first" >&2; exit 1
    fi
    mount --bind "$D/kubelet/$sub" "$dp"
  fi
done
start kubelet "$BIN/kubelet" --config "$D/kubelet-config.yaml" --kubeconfig "$D/kubeconfig" \
  --hostname-override "$NODE" --root-dir "$D/kubelet" --node-ip 127.0.0.1 --v 1
crds=("$repo"/deploy/crds/*.yaml)
[ "$MODE" = none ] && crds=()
"$D/tools/clusterctl" apply "$D/kubeconfig" "${crds[@]}" "$here"/manifests/*.yaml
"$D/tools/clusterctl" wait-node "$D/kubeconfig" "$NODE" 120s || {
  echo "cluster-up: node not Ready; kubelet log tail:" >&2; tail -30 "$D/logs/kubelet.log" >&2; exit 1; }
if [ "$MODE" = none ]; then
  echo none > "$D/run/mode"
  log "no multinet (install it: kubectl apply -k); node $NODE Ready in $(( $(date +%s) - t0 ))s; KUBECONFIG=$D/kubeconfig"
  exit 0
fi

# multinet as the node's CNI, installed as on a real node: RBAC from deploy/, a service-account
# token in the plugin's own kubeconfig, 00-multinet.conflist wrapping the bridge conflist.
"$D/tools/clusterctl" apply "$D/kubeconfig" "$repo"/deploy/rbac/*.yaml
mkdir -p "$D/multinet.d"
sa_token=$("$D/tools/clusterctl" token "$D/kubeconfig" kube-system/multinet 48h "$NODE")
kubeconfig "$D/multinet.d/kubeconfig" multinet "$sa_token"
# Multus's node features its own e2e suite relies on: the readiness indicator (tests remove it to
# hold ADDs) and an auxiliary chain, empty until a test drops plugins into its subdirectory.
touch "$D/run/cluster-network-ready"
thick=()
if [ "$MODE" = thick ]; then
  # The agent as its DaemonSet would run it: its own service account (list/watch), a
  # node-bound token, the same sysfs/state/devinfo/pools as the plugins containerd runs (the
  # shim's DEL fallback execs those with containerd's environment). Kept as a script so tests
  # can kill it and start it again.
  agent_token=$("$D/tools/clusterctl" token "$D/kubeconfig" kube-system/multinetd 48h "$NODE")
  kubeconfig "$D/multinet.d/multinetd.kubeconfig" multinetd "$agent_token"
  agent_metrics=127.0.0.1:$(freeport)
  echo "$agent_metrics" > "$D/run/multinetd.metrics"
  cat > "$D/run/multinetd.sh" <<EOT
#!/bin/sh
exec env MULTINET_SYSFS_ROOT="$D/sim-sysfs" MULTINET_DEVINFO_DIR="$D/devinfo" MULTINET_STATE_DIR="$D/cni-state" MULTINET_POOLS_FILE="$D/pools.json" \\
  "$D/tools/multinetd" --kubeconfig "$D/multinet.d/multinetd.kubeconfig" --node-name "$NODE" \\
  --socket "$D/run/multinet/multinet.sock" --metrics-addr "$agent_metrics" --log-dir "$D/logs" --log-level info "\$@"
EOT
  chmod +x "$D/run/multinetd.sh"
  setsid "$D/run/multinetd.sh" >>"$D/logs/multinetd.log" 2>&1 < /dev/null &
  echo $! > "$D/run/multinetd.pid"
  for i in $(seq 150); do [ -S "$D/run/multinet/multinet.sock" ] && break; sleep 0.2; done
  [ -S "$D/run/multinet/multinet.sock" ] || { echo "cluster-up: multinetd not serving; see $D/logs/multinetd.log" >&2; tail -20 "$D/logs/multinetd.log" >&2; exit 1; }
  thick=(--mode thick --socket "$D/run/multinet/multinet.sock")
fi
"$D/cni-bin/multinet" config generate "${thick[@]}" --conf-dir "$D/net.d" --kubeconfig "$D/multinet.d/kubeconfig" \
  --cache-dir "$D/multinet-cache" --log-dir "$D/logs" --log-file multinet.log --log-level info \
  --readiness-indicator-file "$D/run/cluster-network-ready" --auxiliary-cni-chain-name vendor-cni-chain \
  --namespace-isolation --global-namespaces default \
  --pod-resources-socket "$D/kubelet/pod-resources/kubelet.sock" >/dev/null
echo "$MODE" > "$D/run/mode"
log "multinet $MODE mode; node $NODE Ready in $(( $(date +%s) - t0 ))s; KUBECONFIG=$D/kubeconfig"
