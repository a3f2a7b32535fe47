# e2e/cluster: a real single-node Kubernetes (etcd, kube-apiserver, kubelet, containerd).
TEST_TIERS += e2e-cluster
CLUSTER_DIR ?= /tmp/multinet-cluster
export CLUSTER_DIR
CLUSTER_RUN ?=

.PHONY: cluster-up cluster-down e2e-cluster
cluster-up:
	@./e2e/cluster/up.sh

cluster-down:
	@./e2e/cluster/down.sh

# Brings the cluster up, runs the tests (CLUSTER_RUN=regexp: a subset), always tears it down; on
# failure shows the logs' tails. Then the same for thick mode (e2e-cluster-thick). The DPDK pods'
# test needs OVS-DPDK and testpmd on the node.
e2e-cluster:
	@./e2e/dpdk/deps.sh
	@MULTINET_MODE=thin ./e2e/cluster/up.sh
	@$(GO) test -count=1 -tags e2e_cluster -v -timeout 30m ./e2e/cluster/... $(if $(CLUSTER_RUN),-run '$(CLUSTER_RUN)') ; rc=$$?; \
	  if [ $$rc -ne 0 ]; then for l in kubelet containerd kube-apiserver; do \
	    echo "=== tail of $$l log ($(CLUSTER_DIR)/logs/$$l.log)"; tail -n 25 $(CLUSTER_DIR)/logs/$$l.log; done; fi; \
	  ./e2e/cluster/down.sh; exit $$rc
	@$(MAKE) --no-print-directory e2e-cluster-thick
	@$(MAKE) --no-print-directory e2e-cluster-install

# The node's CNI in thick mode (multinetd + multinet-shim): the meta and SR-IOV tests again, and
# the agent's own (killed while pods are created, down while they are deleted).
THICK_RUN ?= TestPodOnClusterNetwork|TestMeta|TestMultus|TestSriov|TestThick
.PHONY: e2e-cluster-thick
e2e-cluster-thick:
	@MULTINET_MODE=thick ./e2e/cluster/up.sh
	@$(GO) test -count=1 -tags e2e_cluster -v -run '$(THICK_RUN)' ./e2e/cluster/... ; rc=$$?; \
	  if [ $$rc -ne 0 ]; then for l in multinetd kubelet containerd; do \
	    echo "=== tail of $$l log ($(CLUSTER_DIR)/logs/$$l.log)"; tail -n 25 $(CLUSTER_DIR)/logs/$$l.log; done; fi; \
	  ./e2e/cluster/down.sh; exit $$rc

# multinet installed as an operator installs it (issue 14): a cluster with no multinet at all
# (MULTINET_MODE=none), `make image` imported into its containerd, then kubectl apply -k of the
# e2e overlay, pods through the installed agent, a rolling update and kubectl delete -k.
INSTALL_RUN ?= TestInstall
.PHONY: e2e-cluster-install
e2e-cluster-install: image
	@MULTINET_MODE=none ./e2e/cluster/up.sh
	@MULTINET_IMAGE_TAR=$(abspath $(IMAGE_TAR)) $(GO) test -count=1 -tags e2e_cluster -v -timeout 20m -run '$(INSTALL_RUN)' ./e2e/cluster/... ; rc=$$?; \
	  if [ $$rc -ne 0 ]; then for l in kubelet containerd kube-controller-manager kube-scheduler; do \
	    echo "=== tail of $$l log ($(CLUSTER_DIR)/logs/$$l.log)"; tail -n 25 $(CLUSTER_DIR)/logs/$$l.log; done; fi; \
	  ./e2e/cluster/down.sh; exit $$rc
