#!/usr/bin/env bash
# Builds etcd and the Kubernetes commands (kube-apiserver, kubelet, kube-scheduler,
# kube-controller-manager, kubectl) from the Go module proxy into a cache keyed by version,
# outside the repo. Neither installs with `go install` (k8s.io/kubernetes carries
# replace directives), so each builds from a throwaway module generated in the cache.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.5.21}
# K8S_CMDS narrows what is built (make bench needs only kube-apiserver); the cluster needs all.
K8S_ALL="kube-apiserver kubelet kube-scheduler kube-controller-manager kubectl"
K8S_CMDS=${K8S_CMDS:-$K8S_ALL}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/multinet}
out="$CACHE_DIR/cluster/bin-$K8S_VERSION-etcd-$ETCD_VERSION"
mkdir -p "$out"
export GOFLAGS=-mod=mod CGO_ENABLED=0

if [ ! -x "$out/etcd" ]; then
  m="$CACHE_DIR/cluster/src-etcd-$ETCD_VERSION"
  mkdir -p "$m"
  cat > "$m/go.mod" <<EOT
module tools.local/etcd
go 1.24.0
EOT
  printf '//go:build tools\npackage tools\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$m/tools.go"
  (cd "$m" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go build -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$out/etcd.tmp" "$out/etcd"
fi

missing_k8s=""
for c in $K8S_CMDS; do [ -x "$out/$c" ] || missing_k8s="$missing_k8s $c"; done
if [ -n "$missing_k8s" ]; then
  m="$CACHE_DIR/cluster/src-k8s-$K8S_VERSION"
  mkdir -p "$m"
  v0=v0.${K8S_VERSION#v1.}
  {
    echo "module tools.local/k8s"
    echo "go 1.24.0"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    for s in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
      cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
      cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
      kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
      mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
      echo "replace k8s.io/$s => k8s.io/$s $v0"
    done
  } > "$m/go.mod"
  # Every command, whatever K8S_CMDS says, so go.sum covers them all and one cache serves
  # every caller.
  {
    printf '//go:build tools\npackage tools\nimport (\n'
    for c in $K8S_ALL; do printf '_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } > "$m/tools.go"
  ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#v1.}"
  ld="${ld%.*}"
  (cd "$m" && go mod tidy >/dev/null 2>&1 || true)
  for c in $missing_k8s; do
    (cd "$m" && go build -trimpath -ldflags "$ld" -o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$out/$c.tmp" "$out/$c"
  done
fi
echo "$out"
