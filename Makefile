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

.PHONY: all build lint unit security conformance fuzz deps test demo clean
all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/ ./cmd/...

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
