# multinet build and test entry points. `make test` runs every tier; each tier has its own
# target so it can be run alone while iterating. Tiers that need extra parts (QEMU, kubelet)
# live in their own .mk file next to their harness and add themselves to TEST_TIERS.

GO        ?= go
BIN       := bin
# Built tools, kernels and packages are cached outside the repo so a clean clone reuses them.
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/multinet
export CACHE_DIR

CMDS := $(notdir $(wildcard cmd/*))
TEST_TIERS := lint unit security conformance fuzz

.PHONY: all build image lint unit security conformance fuzz deps test demo clean
all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/ ./cmd/...

# The multinet image (docker-archive, no Docker or registry needed): every cmd/ binary but the
# benchmark driver (50 MB a node never runs), static and stripped; the CNI plugins under
# /opt/multinet/bin (what multinetd --install-from copies to the node), the rest under
# /usr/local/bin. Tagged with its content hash, never
# :latest. Import it with `ctr -n k8s.io images import $(IMAGE_TAR)` on each node, or push it.
# IMAGE_LABELS=KEY=VALUE... makes a distinct image (a new tag) from the same binaries.
IMAGE_NAME   ?= registry.local/multinet/multinet
IMAGE_TAR    ?= $(BIN)/multinet-image.tar
IMAGE_LABELS ?=
CNI_PLUGINS  := multinet multinet-shim sriov passthru vhostuser
IMAGE_CMDS   := $(filter-out multinet-bench internal,$(CMDS))
image:
	@rm -rf $(BIN)/image && mkdir -p $(BIN)/image $(dir $(IMAGE_TAR))
	@CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/image/ $(addprefix ./cmd/,$(IMAGE_CMDS))
	@$(GO) run ./hack/mkimage -name $(IMAGE_NAME) -out $(IMAGE_TAR) -entrypoint /usr/local/bin/multinetd \
	  $(foreach l,$(IMAGE_LABELS),-label $(l)) \
	  $(foreach c,$(IMAGE_CMDS),$(BIN)/image/$(c)=$(if $(filter $(c),$(CNI_PLUGINS)),/opt/multinet/bin,/usr/local/bin)/$(c))

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Unit and netns integration tests, under the race detector: tests that need root skip with a
# message when not root.
unit: deps
	$(GO) test -race -count=1 ./...

# Every fuzz target for FUZZTIME on top of its corpus (hack/fuzz.sh lists them from the code).
FUZZTIME ?= 10s
fuzz:
	@GO=$(GO) FUZZTIME=$(FUZZTIME) ./hack/fuzz.sh

# The reproduced attacks of the security review (issue 12), by name, on their own: every such
# test is called TestSecurity... in its package.
security: deps
	$(GO) test -count=1 -run 'Security' ./...

# Upstream's own test inputs (../shared/conformance) through our code; see conformance/.
conformance:
	@GO=$(GO) ./hack/conformance.sh

deps:
	@./hack/deps.sh

# A simulated SR-IOV node, in seconds, on any machine.
demo: build deps
	$(GO) run ./e2e/demo $(BIN)/multinetctl

-include $(wildcard e2e/*/*.mk benchmarks/*.mk)

test:
	@set -e; for t in $(TEST_TIERS); do echo "=== tier $$t"; $(MAKE) --no-print-directory $$t; done

clean:
	rm -rf $(BIN)
