#!/usr/bin/env bash
# Builds upstream Multus's thin plugin (cmd/multus) from the Go module proxy into
# $CACHE_DIR/bench/multus-<version>, once. A throwaway module outside the project's go.mod: its
# code is never part of ours.
set -euo pipefail
v=${1:-v4.3.0}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/multinet}
out="$CACHE_DIR/bench/multus-$v"
[ -x "$out" ] && exit 0
m="$CACHE_DIR/bench/src-multus-$v"
mkdir -p "$m"
printf 'module tools.local/multus\ngo 1.24.0\n' > "$m/go.mod"
printf '//go:build tools\npackage tools\nimport _ "gopkg.in/k8snetworkplumbingwg/multus-cni.v4/cmd/multus"\n' > "$m/tools.go"
echo "building Multus $v (once, ~2 min)"
(cd "$m" && export GOFLAGS=-mod=mod CGO_ENABLED=0 &&
  go get "gopkg.in/k8snetworkplumbingwg/multus-cni.v4@$v" &&
  go build -trimpath -o "$out.tmp" gopkg.in/k8snetworkplumbingwg/multus-cni.v4/cmd/multus)
mv "$out.tmp" "$out"
