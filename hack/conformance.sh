#!/bin/sh
# The conformance tier: the upstream projects' own test inputs (../shared/conformance, or
# $MULTINET_CONFORMANCE_DIR) through our parsers, selectors and status building, held to
# conformance/deviations.json, then one summary line.
set -e
GO=${GO:-go}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
MULTINET_CONFORMANCE_RESULTS=$out $GO test -count=1 -run '^TestConformance' ./meta/ ./deviceplugin/ ./sriovcni/
$GO run ./conformance/summary "$out"
