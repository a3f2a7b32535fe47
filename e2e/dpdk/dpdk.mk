# e2e/dpdk: the DPDK data path with packets, on this host: OVS-DPDK (its own run dir, stopped at
# the end), hugepages, two "pods" (netns + vhost-user slots) attached by the meta-plugin through
# a vhostuser NAD, testpmd on each slot. Needs root; skips with a message otherwise.
TEST_TIERS += e2e-dpdk
DPDK_RUN ?=

.PHONY: e2e-dpdk
e2e-dpdk:
	@if [ "$$(id -u)" != 0 ]; then echo "e2e-dpdk: skipped (needs root: hugepages, OVS-DPDK, network namespaces)"; exit 0; fi; \
	  ./e2e/dpdk/deps.sh && \
	  $(GO) test -count=1 -tags e2e_dpdk -v -timeout 15m ./e2e/dpdk/... $(if $(DPDK_RUN),-run '$(DPDK_RUN)')

# Benchmarks of the same setup (numbers in benchmarks/RESULTS.md): vhost-user attach latency
# (ADD to OVS connected to the pod's socket) and pod-to-pod throughput through OVS-DPDK.
.PHONY: bench-dpdk
bench-dpdk:
	@if [ "$$(id -u)" != 0 ]; then echo "bench-dpdk: needs root"; exit 1; fi; ./e2e/dpdk/deps.sh
	$(GO) test -count=1 -tags e2e_dpdk -run '^$$' -bench "VhostUserAttach|VhostUserPluginAdd" -benchtime 20x ./e2e/dpdk/
	$(GO) test -count=1 -tags e2e_dpdk -run '^$$' -bench PodToPodThroughput -benchtime 2x ./e2e/dpdk/
