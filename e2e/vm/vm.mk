# e2e/vm: the kernel paths on a real kernel, in a QEMU guest with emulated igb SR-IOV NICs.
TEST_TIERS += e2e-vm
VM_TIMEOUT ?= 12m

.PHONY: e2e-vm e2e-vm-deps
e2e-vm-deps:
	@./e2e/vm/deps.sh >/dev/null

# VM_RUN=regexp runs only the matching in-guest tests.
e2e-vm: build e2e-vm-deps
	$(GO) run ./e2e/vm/runner -parts "$$(./e2e/vm/deps.sh)" -bin $(BIN) -timeout $(VM_TIMEOUT) $(if $(VM_RUN),-run '$(VM_RUN)')
