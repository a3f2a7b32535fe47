#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (default 10s) on top of its seed corpus
# and testdata/fuzz/. The targets are listed from the code (`go test -list`), so a new one is
# picked up without editing this file. A crasher fails the run; Go writes it to the package's
# testdata/fuzz/<Target>/, where it is committed with the fix and replayed by every unit run.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
dirs=$(grep -l '^func Fuzz' $(git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go') | xargs -n1 dirname | sort -u)
n=0
for d in $dirs; do
  for t in $($GO test -list '^Fuzz' "./$d" | grep '^Fuzz' || true); do
    echo "=== fuzz ./$d $t ($FUZZTIME)"
    $GO test -run '^$' -fuzz "^$t\$" -fuzztime "$FUZZTIME" "./$d"
    n=$((n + 1))
  done
done
echo "fuzzed $n targets, $FUZZTIME each"
