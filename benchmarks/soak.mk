# make soak: SOAK_CYCLES ADD/DEL cycles (default 1000) on a simulated node over a random mix of
# the bench's pod shapes, asserting that nothing leaks (issue 17): thin (the multinet binary,
# meta/soak_netns_test.go) and thick (multinet-shim + the multinetd process, its RSS checked;
# agent/soak_netns_test.go). Needs root. `make test` runs the same tests with 50 cycles in the
# unit tier. The summary lines go to benchmarks/RESULTS.md; the full log stays in
# benchmarks/out/soak.log.
SOAK_CYCLES ?= 1000
.PHONY: soak
soak: deps
	@mkdir -p benchmarks/out
	@MULTINET_SOAK_CYCLES=$(SOAK_CYCLES) $(GO) test -count=1 -run '^TestSoak(Thick)?$$' -v -timeout 90m ./meta/ ./agent/ >benchmarks/out/soak.log 2>&1; \
	  rc=$$?; grep -E 'soak( thick)?: |^(--- |ok|FAIL)' benchmarks/out/soak.log; exit $$rc
