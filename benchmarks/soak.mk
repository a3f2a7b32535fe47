# make soak: SOAK_CYCLES thin ADD/DEL cycles (default 1000) on a simulated node over a random
# mix of the bench's pod shapes, asserting that nothing leaks (meta/soak_netns_test.go; issue
# 17). Needs root. `make test` runs the same test with 50 cycles in the unit tier. The summary
# line goes to benchmarks/RESULTS.md; the full log stays in benchmarks/out/soak.log.
SOAK_CYCLES ?= 1000
.PHONY: soak
soak: deps
	@mkdir -p benchmarks/out
	@MULTINET_SOAK_CYCLES=$(SOAK_CYCLES) $(GO) test -count=1 -run '^TestSoak$$' -v -timeout 90m ./meta/ >benchmarks/out/soak.log 2>&1; \
	  rc=$$?; grep -E 'soak: |^(--- |ok|FAIL)' benchmarks/out/soak.log; exit $$rc
