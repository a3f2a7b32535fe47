#!/usr/bin/env bash
# Builds upstream Multus from the Go module proxy into $CACHE_DIR/bench, once per version: the
# thin plugin (cmd/multus -> multus-<version>) and thick mode's daemon and shim (cmd/multus-daemon
# -> multus-daemon-<version>, cmd/multus-shim -> multus-shim-<version>). A throwaway module
# outside the project's go.mod: its code is never part of ours.
set -euo pipefail
v=${1:-v4.3.0}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/multinet}
mod=gopkg.in/k8snetworkplumbingwg/multus-cni.v4
todo=()
for c in multus multus-daemon multus-shim; do
  [ -x "$CACHE_DIR/bench/$c-$v" ] || todo+=("$c")
done
[ ${#todo[@]} -eq 0 ] && exit 0
m="$CACHE_DIR/bench/src-multus-$v"
mkdir -p "$m"
printf 'module tools.local/multus\ngo 1.24.0\n' > "$m/go.mod"
{
  printf '//go:build tools\npackage tools\nimport (\n'
  for c in multus multus-daemon multus-shim; do printf '\t_ "%s/cmd/%s"\n' "$mod" "$c"; done
  printf ')\n'
} > "$m/tools.go"
echo "building Multus $v: ${todo[*]} (once, ~2 min each)"
(cd "$m" && export GOFLAGS=-mod=mod CGO_ENABLED=0 &&
  go get "$mod@$v" &&
  for c in "${todo[@]}"; do
    # Stripped, as upstream's images ship them (the shim's exec cost depends on its size).
    go build -trimpath -ldflags '-s -w' -o "$CACHE_DIR/bench/$c-$v.tmp" "$mod/cmd/$c" &&
      mv "$CACHE_DIR/bench/$c-$v.tmp" "$CACHE_DIR/bench/$c-$v"
  done)
