# make bench: multinet vs upstream Multus, thin and thick (multinetd + multinet-shim vs
# multus-daemon + multus-shim), pod attach/detach on a simulated node, side by side in one run
# (benchmarks/RESULTS.md). BENCH_FLAGS='-only herd200' runs the herd of 200 pods, '-scale' the
# agent's RSS with 5,000 pods elsewhere and 2,000 NADs. Not part of `make test`. Needs root (private network and
# mount namespaces); builds Multus and the API server once into $(CACHE_DIR).
MULTUS_VERSION ?= v4.3.0
BENCH_FLAGS    ?=
BENCH_TOOLS     = $(CACHE_DIR)/cluster/bin-v1.34.4-etcd-v3.5.21

BENCH_RUN       = $(BIN)/multinet-bench -tools $(BENCH_TOOLS) -multus $(CACHE_DIR)/bench/multus-$(MULTUS_VERSION) \
  -multus-daemon $(CACHE_DIR)/bench/multus-daemon-$(MULTUS_VERSION) -multus-shim $(CACHE_DIR)/bench/multus-shim-$(MULTUS_VERSION) \
  -multus-version $(MULTUS_VERSION) -multinet-version "$$(git describe --always --dirty 2>/dev/null)"

.PHONY: bench bench-multus bench-prep bench-herd bench-scale
bench: bench-prep
	$(BENCH_RUN) $(BENCH_FLAGS)
	@echo "=== device plugin at scale (8 PFs x 128 VFs)"
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3x -count 1 ./deviceplugin/ | grep -E '^(Benchmark|ok)'

bench-prep: build deps bench-multus
	@command -v iptables >/dev/null || { echo "installing iptables (portmap's DEL)"; apt-get install -y -q --no-install-recommends iptables >/dev/null; }
	@mkdir -p $(BIN)/bench benchmarks/out
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/bench/wrap ./benchmarks/wrap
	@K8S_CMDS=kube-apiserver ./e2e/cluster/build-tools.sh >/dev/null

# 200 eth0 pods attached at once on each thick stack: the daemons' peak RSS, failures, leaks.
bench-herd: bench-prep
	$(BENCH_RUN) -only herd200 -out benchmarks/out/herd.json $(BENCH_FLAGS)

# 5,000 pods on other nodes and 2,000 NADs put into the API server: the thick daemons' RSS
# before and after (their pod informers are node-filtered).
bench-scale: bench-prep
	$(BENCH_RUN) -stacks multinet-thick,multus-thick -only eth0 -cycles 4 -share-cycles 0 -scale -out benchmarks/out/scale.json $(BENCH_FLAGS)

# Upstream Multus (thin plugin, thick mode's daemon and shim) from the Go module proxy, in a
# throwaway module outside ours.
bench-multus:
	@./benchmarks/build-multus.sh $(MULTUS_VERSION)

# Pod create-to-Running latency on the real single-node cluster (e2e/cluster), multinet then
# Multus as the node's CNI; one cluster per machine, hence the lock. Results in
# benchmarks/out/pods.json. `make bench BENCH_PODS=1` runs it too (before the harness).
BENCH_CLUSTER_DIR ?= /tmp/mn-bench
bench-pods: build bench-multus
	@mkdir -p benchmarks/out
	flock /tmp/multinet-cluster.lock sh -c 'export CLUSTER_DIR=$(BENCH_CLUSTER_DIR); ./e2e/cluster/up.sh && \
	  BENCH_MULTUS=$(CACHE_DIR)/bench/multus-$(MULTUS_VERSION) $(GO) test -count=1 -tags bench_cluster -v -timeout 20m ./benchmarks/cluster/; \
	  rc=$$?; ./e2e/cluster/down.sh; exit $$rc'
ifeq ($(BENCH_PODS),1)
bench: bench-pods
endif
.PHONY: bench-pods

# CPU profile of the slowest scenario (16 pods attaching at once), both stacks: perf follows the
# harness and every process it starts (API server, meta-plugins, delegates). The meta-plugins
# are built unstripped so perf can name their functions.
bench-profile: build deps bench-multus
	@command -v perf >/dev/null || { echo "installing linux-perf"; apt-get install -y -q --no-install-recommends linux-perf >/dev/null; }
	@mkdir -p $(BIN)/bench/prof benchmarks/out
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/bench/wrap ./benchmarks/wrap
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/bench/prof/ ./cmd/multinet ./cmd/sriov ./cmd/multinetd ./cmd/multinet-shim
	@K8S_CMDS=kube-apiserver ./e2e/cluster/build-tools.sh >/dev/null
	perf record -q -g -F 999 -o benchmarks/out/perf.data -- $(BIN)/multinet-bench -bin-dir $(BIN)/bench/prof \
	  -tools $(BENCH_TOOLS) -multus $(CACHE_DIR)/bench/multus-$(MULTUS_VERSION) \
	  -multus-daemon $(CACHE_DIR)/bench/multus-daemon-$(MULTUS_VERSION) -multus-shim $(CACHE_DIR)/bench/multus-shim-$(MULTUS_VERSION) -only eth0+1vf-x16 -rounds 4 -share-cycles 0 \
	  -out benchmarks/out/profile.json
	@echo "=== CPU by process"
	@perf report -i benchmarks/out/perf.data --sort comm -g none --no-children --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -15
	@for c in multinet multus multinetd multus-daemon; do echo "=== $$c: where its CPU goes (inclusive)"; \
	  perf report -i benchmarks/out/perf.data --comm $$c --sort sym -g none --children --stdio 2>/dev/null | \
	  grep -E '^ +[0-9]' | grep -E 'runtime\.(main|doInit1|gcBgMarkWorker)|main\.main|Add$$|cmdAdd|ExecPlugin|waitid|clientcmd|NewForConfig|tls\.|\.Get$$|UpdateStatus|SetStatus|Update$$|exc_page_fault|execve' | head -25; done
.PHONY: bench-profile
